//! `syscalls:sys_enter_munmap` / `sys_exit_munmap`: takes unmapped ranges of in-scope
//! processes out of the region table once the call has succeeded.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use aya_log_ebpf::debug;
use map_audit_common::PAGE_SIZE;

use crate::{
    maps::{agent_config, tracepoint_offsets},
    pending, region_table, scope,
};

#[tracepoint]
pub fn sys_enter_munmap(ctx: TracePointContext) -> u32 {
    let off = tracepoint_offsets();
    pending::save_range(&ctx, off.munmap_addr, off.munmap_len, 0).unwrap_or(0)
}

#[tracepoint]
pub fn sys_exit_munmap(ctx: TracePointContext) -> u32 {
    try_sys_exit_munmap(&ctx).unwrap_or(0)
}

fn try_sys_exit_munmap(ctx: &TracePointContext) -> Result<u32, i32> {
    let Some((tgid, scope, call)) = pending::take_succeeded(ctx)? else {
        return Ok(0);
    };
    // Held until the end: another thread's edit of this process must not interleave.
    let _lock = scope::lock_table(tgid);
    let end = call.addr + call.len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    region_table::unmap_range(tgid, scope.generation, call.addr, end, call.seq);
    if agent_config().log_enabled != 0 {
        debug!(ctx, "tgid {} munmap {:x}-{:x}", tgid, call.addr, end);
    }
    Ok(0)
}
