//! `syscalls:sys_enter_munmap` / `sys_exit_munmap`: takes unmapped ranges of in-scope
//! processes out of the region table once the call has succeeded.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use aya_log_ebpf::debug;
use map_audit_common::{PAGE_SIZE, counters::PENDING_TABLE_FULL, region::PendingCall};

use crate::{
    counters::bump,
    maps::{PENDING_CALLS, agent_config, tracepoint_offsets},
    region_table, scope,
};

#[tracepoint]
pub fn sys_enter_munmap(ctx: TracePointContext) -> u32 {
    try_sys_enter_munmap(&ctx).unwrap_or(0)
}

fn try_sys_enter_munmap(ctx: &TracePointContext) -> Result<u32, i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !scope::contains((pid_tgid >> 32) as u32) {
        return Ok(0);
    }
    let off = tracepoint_offsets();
    let call = PendingCall {
        addr: unsafe { ctx.read_at(off.munmap_addr as usize)? },
        len: unsafe { ctx.read_at(off.munmap_len as usize)? },
        ..Default::default()
    };
    if PENDING_CALLS.insert(pid_tgid as u32, call, 0).is_err() {
        bump(PENDING_TABLE_FULL);
    }
    Ok(0)
}

#[tracepoint]
pub fn sys_exit_munmap(ctx: TracePointContext) -> u32 {
    try_sys_exit_munmap(&ctx).unwrap_or(0)
}

fn try_sys_exit_munmap(ctx: &TracePointContext) -> Result<u32, i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(call) = (unsafe { PENDING_CALLS.get(tid) }).copied() else {
        return Ok(0);
    };
    let _ = PENDING_CALLS.remove(tid);
    let ret: i64 = unsafe { ctx.read_at(tracepoint_offsets().exit_ret as usize)? };
    if ret != 0 {
        return Ok(0);
    }
    let end = call.addr + call.len.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    let tgid = (pid_tgid >> 32) as u32;
    region_table::unmap_range(tgid, call.addr, end);
    if agent_config().log_enabled != 0 {
        debug!(ctx, "tgid {} munmap {:x}-{:x}", tgid, call.addr, end);
    }
    Ok(0)
}
