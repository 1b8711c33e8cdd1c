//! `syscalls:sys_enter_mprotect` / `sys_enter_pkey_mprotect` and their exits: a region
//! made writable starts being audited, one made read-only stops, a partial change
//! splits the region.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use map_audit_common::PAGE_SIZE;

use crate::{maps::tracepoint_offsets, pending, region_table, scope};

#[tracepoint]
pub fn sys_enter_mprotect(ctx: TracePointContext) -> u32 {
    let off = tracepoint_offsets();
    pending::save_range(
        &ctx,
        off.mprotect_start,
        off.mprotect_len,
        off.mprotect_prot,
    )
    .unwrap_or(0)
}

#[tracepoint]
pub fn sys_enter_pkey_mprotect(ctx: TracePointContext) -> u32 {
    let off = tracepoint_offsets();
    pending::save_range(
        &ctx,
        off.pkey_mprotect_start,
        off.pkey_mprotect_len,
        off.pkey_mprotect_prot,
    )
    .unwrap_or(0)
}

/// Attached to both `sys_exit_mprotect` and `sys_exit_pkey_mprotect`.
#[tracepoint]
pub fn sys_exit_mprotect(ctx: TracePointContext) -> u32 {
    try_sys_exit_mprotect(&ctx).unwrap_or(0)
}

fn try_sys_exit_mprotect(ctx: &TracePointContext) -> Result<u32, i32> {
    let Some((tgid, scope, call)) = pending::take_succeeded(ctx)? else {
        return Ok(0);
    };
    // Held until the end: another thread's edit of this process must not interleave.
    let _lock = scope::lock_table(tgid);
    let end = call.addr + call.len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    region_table::protect_range(tgid, scope.generation, call.addr, end, call.prot, call.seq);
    Ok(0)
}
