//! `go-maps --all-go`: every exec on the host is reported (a bare record header), so
//! the agent can look at the new program and hook it when it is a Go binary not yet
//! hooked. The uprobes go on the binary's file: later processes of the same binary
//! are covered without a record of their own being needed.

use aya_ebpf::{bindings::BPF_RB_FORCE_WAKEUP, macros::tracepoint, programs::TracePointContext};
use map_audit_common::{
    go_maps::{KIND_GO_EXEC, counters::EXECS_LOST_RINGBUF_FULL},
    records::RecordHeader,
};

use crate::{
    go_writers::{bump, config},
    maps::EVENTS,
    records,
};

#[tracepoint]
pub fn go_process_exec(_ctx: TracePointContext) -> u32 {
    if config().all_processes == 0 {
        return 0;
    }
    // Woken at once: the sooner the hooks are on, the smaller the window in which the
    // new program can crash unseen.
    if EVENTS
        .output::<RecordHeader>(records::header(KIND_GO_EXEC), BPF_RB_FORCE_WAKEUP.into())
        .is_err()
    {
        bump(EXECS_LOST_RINGBUF_FULL);
    }
    0
}
