//! `syscalls:sys_enter_brk` / `sys_exit_brk`: the brk heap (`[heap]`, glibc's main
//! malloc arena) is one region that grows and shrinks in place, keeping its id. brk
//! returns the new break, or the old one when it fails, so the exit alone tells the
//! heap's extent: `[mm->start_brk, PAGE_ALIGN(brk))`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};
use map_audit_common::{
    PAGE_SIZE,
    counters::BRK_UNTRACKED,
    records::ORIGIN_BRK,
    region::{MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, PendingCall, REGION_HEAP, Region},
};

use crate::{
    counters::bump,
    id_sequence,
    maps::{kernel_offsets, tracepoint_offsets},
    pending, records, region_filter, region_table, scope,
};

#[tracepoint]
pub fn sys_enter_brk(ctx: TracePointContext) -> u32 {
    try_sys_enter_brk(&ctx).unwrap_or(0)
}

fn try_sys_enter_brk(ctx: &TracePointContext) -> Result<u32, i32> {
    if scope::get((bpf_get_current_pid_tgid() >> 32) as u32).is_none() {
        return Ok(0);
    }
    pending::save(&PendingCall {
        addr: unsafe { ctx.read_at(tracepoint_offsets().brk_brk as usize)? },
        ..Default::default()
    });
    Ok(0)
}

#[tracepoint]
pub fn sys_exit_brk(ctx: TracePointContext) -> u32 {
    try_sys_exit_brk(&ctx).unwrap_or(0)
}

fn try_sys_exit_brk(ctx: &TracePointContext) -> Result<u32, i32> {
    let Some((tgid, scope, call, brk)) = pending::take_mapped(ctx)? else {
        return Ok(0);
    };
    // Held until the end: another thread's edit of this process must not interleave.
    let _lock = scope::lock_table(tgid);
    let Ok(start_brk) = start_brk() else {
        bump(BRK_UNTRACKED);
        return Ok(0);
    };
    let heap_start = start_brk & !(PAGE_SIZE - 1);
    let heap_end = brk.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let generation = scope.generation;
    match region_table::lookup(tgid, generation, heap_start) {
        Some(heap) if heap_end > heap.end => {
            let grown = Region {
                end: heap_end,
                ..heap
            };
            region_table::replace(tgid, &heap, &grown);
            records::region_mapped(&grown, ORIGIN_BRK);
        }
        Some(heap) if heap_end < heap.end => {
            region_table::unmap_range(tgid, generation, heap_end, heap.end, call.seq);
        }
        Some(_) => {}
        None if heap_end > heap_start => {
            let heap = Region {
                start: heap_start,
                end: heap_end,
                file_offset: 0,
                id: id_sequence::next_id(),
                prot: PROT_READ | PROT_WRITE,
                flags: MAP_PRIVATE | MAP_ANONYMOUS | REGION_HEAP,
                generation,
                path_filter: region_filter::initial_path_state(MAP_ANONYMOUS),
                ..Region::default()
            };
            region_table::insert(tgid, &heap);
            records::region_mapped(&heap, ORIGIN_BRK);
        }
        None => {}
    }
    Ok(0)
}

/// `current->mm->start_brk`.
#[inline(always)]
fn start_brk() -> Result<u64, i32> {
    let off = kernel_offsets();
    unsafe {
        let mm: u64 =
            bpf_probe_read_kernel((bpf_get_current_task() + u64::from(off.task_mm)) as *const u64)?;
        bpf_probe_read_kernel((mm + u64::from(off.mm_start_brk)) as *const u64)
    }
}
