//! Process lifecycle: `sched_process_fork` (raw tracepoint: it gives the child task, so
//! new threads, which share their process's regions, can be told apart from new
//! processes), `sched:sched_process_exec` and `sched:sched_process_exit`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel},
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use map_audit_common::{
    counters::FORK_FALLBACKS_FULL,
    records::{KIND_EXEC_IMAGE, KIND_PROCESS_EXEC, KIND_PROCESS_EXIT, KIND_PROCESS_FORK},
    region::{ForkFallback, MAP_PRIVATE, PROT_EXEC, PROT_READ, Region, SCOPE_FORKED},
};

use crate::{
    counters::bump,
    exec_mappings, id_sequence, mapped_file,
    maps::{FORK_FALLBACKS, kernel_offsets},
    pending, rate_limit, records, scope,
};

/// TP_PROTO(struct task_struct *parent, struct task_struct *child); runs in the parent,
/// before the child first runs.
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
    // fall back to the parent's as they are at this moment.
    let Some(entry) = scope::add(child_tgid, SCOPE_FORKED) else {
        return 0;
    };
    let fallback = ForkFallback {
        parent_tgid,
        parent_generation: parent.generation,
        child_generation: entry.generation,
        _pad: 0,
        fork_seq: id_sequence::current_seq(),
        parent_edits: parent.edits,
    };
    if FORK_FALLBACKS.insert(child_tgid, fallback, 0).is_err() {
        bump(FORK_FALLBACKS_FULL);
    }
    records::process(KIND_PROCESS_FORK, child_tgid, entry.generation);
    0
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    exec(exec_mappings::Walk::Default)
}

/// The object for older kernels run on a kernel without the VMA list (6.1+, forced
/// with `--ebpf-object linux5-10`): the exec-time walk by `bpf_find_vma`, as in the
/// 5.17 object. 5.10 never loads it.
#[cfg(feature = "kernel-5-10")]
#[tracepoint]
pub fn sched_process_exec_find_vma(_ctx: TracePointContext) -> u32 {
    exec(exec_mappings::Walk::FindVma)
}

#[inline(always)]
fn exec(walk: exec_mappings::Walk) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let entry = match scope::get(tgid) {
        // A new generation: the old image's regions stop matching at once; the agent
        // deletes their entries.
        Some(old) => {
            let Some(entry) = scope::renew(tgid, &old) else {
                return 0;
            };
            records::process(KIND_PROCESS_EXEC, tgid, entry.generation);
            entry
        }
        // A process the exec brings into scope (its new name matches `--comm`, or
        // `--all`) joins now, so what exec maps is tracked too, not only its mmaps.
        None => match scope::get_or_adopt(tgid) {
            Some(entry) => entry,
            None => return 0,
        },
    };
    // The new program's text and path, for symbols that outlive the process.
    if let Ok((start, end)) = mapped_file::code_range() {
        let image = Region {
            start,
            end,
            id: id_sequence::next_id(),
            prot: PROT_READ | PROT_EXEC,
            flags: MAP_PRIVATE,
            ..Default::default()
        };
        mapped_file::send_exe(image.id);
        records::region_change(KIND_EXEC_IMAGE, &image, start, end, 0);
    }
    // What exec mapped without a system call: the program's and its interpreter's
    // segments (data, bss) and the stack, before the program's first instruction.
    exec_mappings::track(tgid, entry.generation, walk);
    0
}

#[tracepoint]
pub fn sched_process_exit(_ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let (tgid, tid) = ((pid_tgid >> 32) as u32, pid_tgid as u32);
    pending::forget(tid);
    let Some(entry) = scope::get(tgid) else {
        return 0;
    };
    // A process ends with its last thread, not with its main thread: `main` may call
    // pthread_exit while workers run, and a non-main thread's exec kills the old main.
    if !group_dead(tgid == tid) {
        return 0;
    }
    // The region table's entries of the process are the agent's to delete: it holds the
    // list of them (the kernel cannot iterate an LPM trie).
    scope::remove(tgid);
    rate_limit::forget(tgid);
    records::process(KIND_PROCESS_EXIT, tgid, entry.generation);
    0
}

/// Whether the exiting thread is its process's last: `current->signal->live` has
/// dropped to 0 (do_exit decrements it before this tracepoint). If it cannot be read,
/// the main thread's exit stands for the process's.
#[inline(always)]
fn group_dead(main_thread: bool) -> bool {
    let off = kernel_offsets();
    let live = unsafe {
        bpf_probe_read_kernel((bpf_get_current_task() + u64::from(off.task_signal)) as *const u64)
            .and_then(|signal| {
                bpf_probe_read_kernel((signal + u64::from(off.signal_live)) as *const i32)
            })
    };
    match live {
        Ok(live) => live <= 0,
        Err(_) => main_thread,
    }
}
