//! `sched:sched_process_fork` / `sched_process_exit`: children of audited processes are
//! audited; the agent hears when an audited process ends so it can drop its regions.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use map_audit_common::{
    counters::EXIT_EVENTS_LOST_RINGBUF_FULL,
    records::{ExitRecord, KIND_PROCESS_EXIT},
};

use crate::{
    counters::bump,
    maps::{EVENTS, SCOPE, tracepoint_offsets},
    records, scope,
};

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    try_sched_process_fork(&ctx).unwrap_or(0)
}

fn try_sched_process_fork(ctx: &TracePointContext) -> Result<u32, i32> {
    // Runs in the parent. New threads are added too (the tracepoint cannot tell them
    // apart); their entries are removed when they exit.
    if !scope::contains((bpf_get_current_pid_tgid() >> 32) as u32) {
        return Ok(0);
    }
    let child: i32 = unsafe { ctx.read_at(tracepoint_offsets().fork_child_pid as usize)? };
    scope::add(child as u32);
    Ok(0)
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    if tid != tgid {
        let _ = SCOPE.remove(tid);
        return 0;
    }
    if SCOPE.remove(tgid).is_err() {
        return 0;
    }
    let record = ExitRecord {
        header: records::header(KIND_PROCESS_EXIT),
    };
    if EVENTS.output::<ExitRecord>(&record, 0).is_err() {
        bump(EXIT_EVENTS_LOST_RINGBUF_FULL);
    }
    0
}
