//! `--rate-limit N`: a token bucket per process (N fault records per second, bursts of
//! up to N), so one process's flood cannot drown the rest. Every fault it holds back is
//! counted (`FAULTS_RATE_LIMITED`).

use aya_ebpf::helpers::bpf_ktime_get_ns;
use map_audit_common::{
    counters::{FAULTS_RATE_LIMITED, RATE_BUCKETS_FULL},
    region::RateBucket,
};

use crate::{
    counters::bump,
    maps::{RATE_BUCKETS, agent_config},
};

const NANO: u64 = 1_000_000_000;

/// Whether a fault record of `tgid` may be sent now (counts it when not).
#[inline(always)]
pub fn admit(tgid: u32) -> bool {
    admit_counted(tgid, FAULTS_RATE_LIMITED)
}

/// `admit` for records that count what is held back in `limited`.
#[inline(always)]
pub fn admit_counted(tgid: u32, limited: u32) -> bool {
    let rate = agent_config().rate_limit;
    if rate == 0 {
        return true;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let full = rate * NANO;
    let Some(bucket) = RATE_BUCKETS.get_ptr_mut(tgid) else {
        // First fault of this process: a full bucket, minus this record.
        let bucket = RateBucket {
            nano_tokens: full - NANO,
            last_ns: now,
        };
        if RATE_BUCKETS.insert(tgid, bucket, 0).is_err() {
            bump(RATE_BUCKETS_FULL);
        }
        return true;
    };
    // Racing CPUs may admit a record or two extra; every record is still either sent
    // or counted.
    let bucket = unsafe { &mut *bucket };
    let elapsed = now.saturating_sub(bucket.last_ns).min(NANO);
    let tokens = (bucket.nano_tokens + elapsed * rate).min(full);
    bucket.last_ns = now;
    if tokens < NANO {
        bucket.nano_tokens = tokens;
        bump(limited);
        return false;
    }
    bucket.nano_tokens = tokens - NANO;
    true
}

/// Forgets an exited process's bucket.
#[inline(always)]
pub fn forget(tgid: u32) {
    // A process that never sent a record has none: absent is the only failure.
    let _ = RATE_BUCKETS.remove(tgid);
}
