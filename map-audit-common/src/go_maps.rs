//! Go mode (`map-audit go-maps`): the configuration, table entries, records and counters
//! shared by the Go runtime uprobes and the agent.

use crate::{MAX_STACK_DEPTH, records::RecordHeader};

/// Two goroutines were inside a write to one map at once (`GoRaceRecord`).
pub const KIND_GO_MAP_RACE: u32 = 20;
/// A goroutine reached `runtime.fatal`/`throw`, or panicked inside a map write
/// (`GoCrashRecord`).
pub const KIND_GO_CRASH: u32 = 21;
/// `--all-go`: a process called exec (a `RecordHeader` alone); the agent looks at its
/// new program.
pub const KIND_GO_EXEC: u32 = 22;

/// `GoCrashRecord::crash` values.
pub const CRASH_FATAL: u32 = 1;
pub const CRASH_PANIC: u32 = 2;
/// `runtime.fatalpanic`: a panic nothing recovered ends the process (`--crash-only`).
pub const CRASH_FATAL_PANIC: u32 = 3;

/// Bytes of the fatal error's message kept (`runtime.fatal(s string)`).
pub const CRASH_MESSAGE_LEN: usize = 64;

/// What the agent tells the programs at load time.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoConfig {
    /// The audited process; the uprobes are attached for it alone, this guards them.
    pub tgid: u32,
    /// 1 with `--all-go`: every process running a hooked binary is audited (`tgid` 0),
    /// and execs are reported.
    pub all_processes: u32,
    /// An open write older than this is treated as missed and replaced, never reported.
    pub ttl_ns: u64,
}
const _: () = assert!(core::mem::size_of::<GoConfig>() == 16);

/// A uprobe's cookie: the hook's index in the agent's list, and the byte offset of
/// `goid` in `runtime.g` of the binary it is attached to (binaries differ: `--all-go`).
pub const fn uprobe_cookie(hook: u32, goid_offset: u32) -> u64 {
    ((goid_offset as u64) << 32) | hook as u64
}

/// `GO_WRITERS` key: one map of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoMapKey {
    pub tgid: u32,
    pub _pad: u32,
    /// The `hmap`/`maps.Map` pointer (RBX at the write's entry).
    pub map: u64,
}
const _: () = assert!(core::mem::size_of::<GoMapKey>() == 16);

/// `GO_GOROUTINES` key: one goroutine of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoroutineKey {
    pub tgid: u32,
    pub _pad: u32,
    pub goid: u64,
}
const _: () = assert!(core::mem::size_of::<GoroutineKey>() == 16);

/// A goroutine inside a map write, as seen at the write's entry.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoWriter {
    pub goid: u64,
    pub tid: u32,
    /// Index of the hooked function in the agent's hook list (the uprobe's cookie).
    pub hook: u32,
    /// The hooked function's entry address (the first frame).
    pub entry_ip: u64,
    /// `bpf_ktime_get_ns` at entry.
    pub start_ns: u64,
    /// Bytes of `stack` filled, or a negative errno.
    pub stack_bytes: i64,
    /// Non-zero when frames beyond `MAX_STACK_DEPTH` were cut.
    pub stack_truncated: u32,
    pub _pad: u32,
    /// The caller's return address (*RSP) then the frame-pointer chain, innermost first.
    pub stack: [u64; MAX_STACK_DEPTH],
}
const _: () = assert!(core::mem::size_of::<GoWriter>() == 48 + 8 * MAX_STACK_DEPTH);

impl GoWriter {
    pub const fn zeroed() -> Self {
        Self {
            goid: 0,
            tid: 0,
            hook: 0,
            entry_ip: 0,
            start_ns: 0,
            stack_bytes: 0,
            stack_truncated: 0,
            _pad: 0,
            stack: [0; MAX_STACK_DEPTH],
        }
    }
}

/// `KIND_GO_MAP_RACE`: `current` entered a write to `map` while `holder` was in one.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoRaceRecord {
    pub header: RecordHeader,
    pub map: u64,
    pub holder: GoWriter,
    pub current: GoWriter,
}
const _: () = assert!(core::mem::size_of::<GoRaceRecord>() == 56 + 2 * (48 + 8 * MAX_STACK_DEPTH));

/// `KIND_GO_CRASH`: the crashing goroutine, and the map write it was in (if any).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoCrashRecord {
    pub header: RecordHeader,
    /// `CRASH_FATAL` or `CRASH_PANIC`.
    pub crash: u32,
    /// Bytes of `message` filled.
    pub message_len: u32,
    pub message: [u8; CRASH_MESSAGE_LEN],
    /// The map of the open write (valid when `in_map_write` is 1; a nil map is 0).
    pub map: u64,
    /// The open write's hook index, `u32::MAX` when another goroutine held the map.
    pub map_hook: u32,
    /// 1 when the goroutine was inside a map write.
    pub in_map_write: u32,
    /// 1 when the program stopped the whole process with SIGSTOP (`--crash-only`) for
    /// the agent to read every thread, which then resumes it.
    pub stopped: u32,
    pub _pad: u32,
    /// The crashing goroutine at `runtime.fatal`/`gopanic` (`entry_ip` is that
    /// function; `hook` its index).
    pub writer: GoWriter,
}
const _: () =
    assert!(core::mem::size_of::<GoCrashRecord>() == 48 + 8 + 64 + 24 + 48 + 8 * MAX_STACK_DEPTH);

/// Go mode's counters: the kernel's (the per-CPU `GO_COUNTERS`, by index) and the
/// agent's, declared once each (see `counter_catalogue`).
pub mod counters {
    use crate::{indexed_counters, named_counters};

    indexed_counters! {
        /// Go mode's kernel counters, summed over CPUs.
        pub struct GoKernelCounters, COUNT {
            /// Map writes entered (entry uprobe hits of the audited process).
            WRITES_ENTERED = 0, writes_entered: Count;
            /// Map writes whose return was seen.
            WRITES_RETURNED = 1, writes_returned: Count;
            /// Entries of a goroutine already inside a write to the same map (stack growth
            /// restarts the function): not a race.
            REENTRIES = 2, reentries: Count;
            /// Races found (each sends a `GoRaceRecord`).
            RACES = 3, races: Count;
            /// Race records that did not fit in the ring buffer.
            RACES_LOST_RINGBUF_FULL = 4, races_lost_ringbuf_full: Loss;
            /// Open writes older than the TTL, replaced without a report.
            WRITERS_EXPIRED = 5, writers_expired: Count;
            /// Writes that could not be recorded: writer or goroutine table full (a race
            /// with them goes unseen).
            WRITER_TABLE_FULL = 6, writer_table_full: Loss;
            /// Entries whose goroutine id could not be read.
            GOID_UNREADABLE = 7, goid_unreadable: Loss;
            /// Stacks cut at `MAX_STACK_DEPTH` frames.
            STACKS_TRUNCATED = 8, stacks_truncated: Loss;
            /// Crash records sent (fatal, or a panic inside a map write).
            CRASHES = 9, crashes: Count;
            /// Crash records that did not fit in the ring buffer.
            CRASHES_LOST_RINGBUF_FULL = 10, crashes_lost_ringbuf_full: Loss;
            /// Panics that closed an open map write.
            WRITES_CLOSED_BY_PANIC = 11, writes_closed_by_panic: Count;
            /// Crashed processes stopped with SIGSTOP for the agent's capture (`--crash-only`).
            CRASH_STOPS = 12, crash_stops: Count;
            /// SIGSTOPs the kernel refused (`bpf_send_signal`): that crash is reported
            /// without the other threads.
            CRASH_STOPS_FAILED = 13, crash_stops_failed: Loss;
            /// `--all-go`: exec records that did not fit in the ring buffer (a Go
            /// program first run then is hooked at the next rescan, each stats interval).
            EXECS_LOST_RINGBUF_FULL = 14, execs_lost_ringbuf_full: Loss;
        }
    }

    named_counters! {
        /// Go mode's agent counters.
        pub struct GoAgentCounters {
            /// `go_map_concurrent_write` events printed.
            races_reported: Count;
            /// Races folded into `suppressed` (same map and call sites within an interval).
            races_suppressed: Count;
            /// `go_runtime_crash` events printed.
            crashes_reported: Count;
            /// Ring-buffer records that failed the checked decoding.
            records_undecodable: Loss;
            /// Stack frames no function of the binary contains (printed without a name).
            frames_unknown: Loss;
            /// Crashed processes whose threads the agent read and then resumed.
            crash_captures: Count;
            /// Crash captures that failed (the process already gone, or traced by
            /// another debugger): the crash is reported without the other threads.
            crash_captures_failed: Loss;
            /// Threads of a captured process the agent could not stop and read.
            threads_uncaptured: Loss;
            /// `--all-go`: Go programs found (running at the start, or exec'd since)
            /// and hooked (`go_program_hooked`).
            programs_hooked: Count;
            /// `--all-go`: Go programs found that could not be hooked
            /// (`go_program_refused` says why): their crashes go unseen.
            programs_refused: Loss;
            /// `--all-go`: programs looked at that are not Go (each file once).
            programs_not_go: Count;
            /// Crash records of a process whose program the agent could not read back:
            /// not reported (the process is let go).
            crashes_without_program: Loss;
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` integers with explicit padding (sizes asserted above).
    unsafe impl aya::Pod for super::GoConfig {}
    unsafe impl aya::Pod for super::GoMapKey {}
    unsafe impl aya::Pod for super::GoroutineKey {}
    unsafe impl aya::Pod for super::GoWriter {}
    unsafe impl aya::Pod for super::GoRaceRecord {}
    unsafe impl aya::Pod for super::GoCrashRecord {}
}
