//! Turns the kernel's CLOCK_MONOTONIC timestamps into RFC 3339 UTC wall-clock time.

use nix::time::{ClockId, clock_gettime};
use time::OffsetDateTime;

/// The offset between the realtime and monotonic clocks, taken once at start-up (an
/// NTP step later shifts event times by the step, as in perf and bpftrace).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    realtime_minus_monotonic_ns: i128,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        let ns = |id| {
            let t = clock_gettime(id).expect("clock_gettime of a standard clock cannot fail");
            t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128
        };
        Self {
            realtime_minus_monotonic_ns: ns(ClockId::CLOCK_REALTIME) - ns(ClockId::CLOCK_MONOTONIC),
        }
    }

    /// RFC 3339 with nanoseconds for a `bpf_ktime_get_ns` value.
    pub fn format_monotonic(&self, monotonic_ns: u64) -> String {
        format_unix_ns(monotonic_ns as i128 + self.realtime_minus_monotonic_ns)
    }

    /// RFC 3339 with nanoseconds for now.
    pub fn now(&self) -> String {
        let t = clock_gettime(ClockId::CLOCK_REALTIME).expect("CLOCK_REALTIME is always there");
        format_unix_ns(t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
    }
}

fn format_unix_ns(ns: i128) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(ns).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_nanoseconds() {
        assert_eq!(
            format_unix_ns(1_764_157_920_000_000_005),
            "2025-11-26T11:52:00.000000005Z"
        );
    }
}
