//! `syscalls:sys_enter_msync` / `sys_exit_msync`: an msync of an in-scope process on a
//! tracked region becomes a record at its return, with the range, flags, result,
//! duration and the caller's user stack (walked like a fault's, from the registers
//! the task saved at the system call).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use map_audit_common::{
    PAGE_SIZE,
    counters::{MSYNCS, MSYNCS_LOST_RINGBUF_FULL, MSYNCS_RATE_LIMITED, MSYNCS_UNTRACKED},
    records::{KIND_REGION_SYNCED, SyncRecord},
    region::PendingCall,
};

use crate::{
    counters::bump,
    maps::{EVENTS, SYNC_SCRATCH, tracepoint_offsets},
    pending, rate_limit, records, region_cache, region_table, scope, task_regs,
    user_stack::{self, Frames, UserRegs},
    write_fault::walk_result,
};

#[tracepoint]
pub fn sys_enter_msync(ctx: TracePointContext) -> u32 {
    try_sys_enter_msync(&ctx).unwrap_or(0)
}

fn try_sys_enter_msync(ctx: &TracePointContext) -> Result<u32, i32> {
    if scope::get((bpf_get_current_pid_tgid() >> 32) as u32).is_none() {
        return Ok(0);
    }
    let off = tracepoint_offsets();
    pending::save(&PendingCall {
        addr: unsafe { ctx.read_at(off.msync_start as usize)? },
        len: unsafe { ctx.read_at(off.msync_len as usize)? },
        flags: unsafe { ctx.read_at::<u64>(off.msync_flags as usize)? } as u32,
        entered_ns: unsafe { bpf_ktime_get_ns() },
        ..Default::default()
    });
    Ok(0)
}

#[tracepoint]
pub fn sys_exit_msync(ctx: TracePointContext) -> u32 {
    try_sys_exit_msync(&ctx).unwrap_or(0)
}

fn try_sys_exit_msync(ctx: &TracePointContext) -> Result<u32, i32> {
    let Some((tgid, call, ret)) = pending::take(ctx)? else {
        return Ok(0);
    };
    // A failed call may name an unaligned start: the region is the one holding its page.
    let Some((region, own)) = region_cache::region_for_fault(tgid, call.addr & !(PAGE_SIZE - 1))
    else {
        bump(MSYNCS_UNTRACKED);
        return Ok(0);
    };
    bump(MSYNCS);
    if !rate_limit::admit_counted(tgid, MSYNCS_RATE_LIMITED) {
        return Ok(0);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let user_regs = task_regs::current_user_regs();
    let tables = region_table::walk_tables(tgid, &region, own);
    let walked = user_stack::walk(UserRegs::At(user_regs), Frames::Sync, tables);
    let Some(record) = SYNC_SCRATCH.get_ptr_mut(0) else {
        return Ok(0);
    };
    let record = unsafe { &mut *record };
    (record.stack_bytes, record.stack_end) = walk_result(walked);
    record.header = records::header_at(KIND_REGION_SYNCED, now);
    record.start = call.addr;
    record.len = call.len;
    record.flags = call.flags;
    record.ret = ret;
    record.duration_ns = now.saturating_sub(call.entered_ns);
    record.region = region;
    let len = SyncRecord::wire_len(record.stack_bytes);
    let bytes =
        unsafe { core::slice::from_raw_parts((record as *const SyncRecord).cast::<u8>(), len) };
    // An msync is rare and the agent may be waiting on it: wake it.
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        bump(MSYNCS_LOST_RINGBUF_FULL);
    }
    Ok(0)
}
