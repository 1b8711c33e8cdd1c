//! Process lifecycle: `sched_process_fork` (raw tracepoint: it gives the child task, so
//! new threads, which share their process's regions, can be told apart from new
//! processes), `sched:sched_process_exec` and `sched:sched_process_exit`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_kernel},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use map_audit_common::{
    records::{KIND_EXEC_IMAGE, KIND_PROCESS_EXEC, KIND_PROCESS_EXIT, KIND_PROCESS_FORK},
    region::{MAP_PRIVATE, PROT_EXEC, PROT_READ, Region},
};

use crate::{
    mapped_file,
    maps::{SCOPE, kernel_offsets},
    pending, rate_limit, records, region_cache, region_table, scope,
};

/// TP_PROTO(struct task_struct *parent, struct task_struct *child); runs in the parent.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork(ctx: RawTracePointContext) -> i32 {
    let parent_tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(parent) = scope::get(parent_tgid) else {
        return 0;
    };
    let child: u64 = ctx.arg(1);
    let Ok(child_tgid) = (unsafe {
        bpf_probe_read_kernel((child + u64::from(kernel_offsets().task_tgid)) as *const u32)
    }) else {
        return 0;
    };
    if child_tgid == parent_tgid {
        return 0; // a thread: same process, same regions
    }
    // Until the agent copies the parent's regions to the child, the child's faults
    // fall back to the parent's (as of now).
    if let Some(entry) = scope::add(child_tgid, parent_tgid, parent.generation) {
        records::process(KIND_PROCESS_FORK, child_tgid, entry.generation);
    }
    0
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if scope::get(tgid).is_none() {
        return 0;
    }
    // A new generation: the old image's regions stop matching at once; the agent
    // deletes their entries.
    if let Some(entry) = scope::add(tgid, 0, 0) {
        records::process(KIND_PROCESS_EXEC, tgid, entry.generation);
    }
    // The new program's text and path, for symbols that outlive the process.
    if let Ok((start, end)) = mapped_file::code_range() {
        let image = Region {
            start,
            end,
            id: region_table::next_id(),
            prot: PROT_READ | PROT_EXEC,
            flags: MAP_PRIVATE,
            ..Default::default()
        };
        mapped_file::send_exe(image.id);
        records::region_change(KIND_EXEC_IMAGE, &image, start, end, 0);
    }
    0
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    pending::forget(tid);
    if tid != tgid {
        return 0;
    }
    let Some(entry) = scope::get(tgid) else {
        return 0;
    };
    // The region table's entries of the process are the agent's to delete: it holds the
    // list of them (the kernel cannot iterate an LPM trie).
    let _ = SCOPE.remove(tgid);
    region_cache::tables_changed();
    rate_limit::forget(tgid);
    records::process(KIND_PROCESS_EXIT, tgid, entry.generation);
    0
}
