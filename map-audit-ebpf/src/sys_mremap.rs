//! `syscalls:sys_enter_mremap` / `sys_exit_mremap`: a region moved, grown or shrunk is
//! reported unmapped at its old place and mapped (with a new id) at its new one.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use map_audit_common::{
    PAGE_SIZE,
    records::ORIGIN_MREMAP,
    region::{MREMAP_DONTUNMAP, MREMAP_FIXED, PendingCall, Region, change_applies},
};

use crate::{id_sequence, maps::tracepoint_offsets, pending, records, region_table, scope};

#[tracepoint]
pub fn sys_enter_mremap(ctx: TracePointContext) -> u32 {
    try_sys_enter_mremap(&ctx).unwrap_or(0)
}

fn try_sys_enter_mremap(ctx: &TracePointContext) -> Result<u32, i32> {
    if scope::get((bpf_get_current_pid_tgid() >> 32) as u32).is_none() {
        return Ok(0);
    }
    let off = tracepoint_offsets();
    let call = unsafe {
        PendingCall {
            addr: ctx.read_at(off.mremap_addr as usize)?,
            len: ctx.read_at(off.mremap_old_len as usize)?,
            new_len: ctx.read_at(off.mremap_new_len as usize)?,
            flags: ctx.read_at::<u64>(off.mremap_flags as usize)? as u32,
            ..Default::default()
        }
    };
    pending::save(&call);
    Ok(0)
}

#[tracepoint]
pub fn sys_exit_mremap(ctx: TracePointContext) -> u32 {
    try_sys_exit_mremap(&ctx).unwrap_or(0)
}

fn try_sys_exit_mremap(ctx: &TracePointContext) -> Result<u32, i32> {
    let Some((tgid, scope, call, new_start)) = pending::take_mapped(ctx)? else {
        return Ok(0);
    };
    // Held until the end: another thread's edit of this process must not interleave.
    let _lock = scope::lock_table(tgid);
    let old_end = call.addr + call.len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let new_end = new_start + call.new_len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let generation = scope.generation;
    if call.flags & MREMAP_FIXED != 0 {
        region_table::unmap_range(tgid, generation, new_start, new_end, call.seq);
    }
    let old = region_table::lookup(tgid, generation, call.addr)
        .filter(|region| change_applies(region, call.seq));
    let Some(old) = old else {
        // Not in the kernel's table (the agent's copy may hold it): the agent moves it.
        records::remap_unresolved(call.addr, old_end, new_start, new_end, call.flags, call.seq);
        return Ok(0);
    };
    if call.flags & MREMAP_DONTUNMAP == 0 {
        region_table::unmap_range(tgid, generation, call.addr, old_end, call.seq);
    }
    let moved = Region {
        start: new_start,
        end: new_end,
        file_offset: old.file_offset + (call.addr - old.start),
        id: id_sequence::next_id(),
        generation,
        ..old
    };
    region_table::insert(tgid, &moved);
    records::region_mapped(&moved, ORIGIN_MREMAP);
    Ok(0)
}
