//! Syscall arguments between `sys_enter_*` and `sys_exit_*`, by thread id.

use aya_ebpf::{helpers::bpf_get_current_pid_tgid, programs::TracePointContext};
use map_audit_common::{
    counters::PENDING_TABLE_FULL,
    region::{PendingCall, ScopeEntry},
};

use crate::{
    counters::bump,
    id_sequence,
    maps::{PENDING_CALLS, tracepoint_offsets},
    scope,
};

/// Saves `call` for the current thread, with the id sequence as it stands now (see
/// `map_audit_common::region::change_applies`).
#[inline(always)]
pub fn save(call: &PendingCall) {
    let call = PendingCall {
        seq: id_sequence::current_seq(),
        ..*call
    };
    if PENDING_CALLS
        .insert(bpf_get_current_pid_tgid() as u32, &call, 0)
        .is_err()
    {
        bump(PENDING_TABLE_FULL);
    }
}

/// Saves an (address, length, prot) call of an in-scope process, reading the fields
/// at the given offsets (`prot_offset` 0: no prot).
#[inline(always)]
pub fn save_range(
    ctx: &TracePointContext,
    addr_offset: u32,
    len_offset: u32,
    prot_offset: u32,
) -> Result<u32, i32> {
    if scope::get((bpf_get_current_pid_tgid() >> 32) as u32).is_none() {
        return Ok(0);
    }
    let prot = if prot_offset == 0 {
        0
    } else {
        (unsafe { ctx.read_at::<u64>(prot_offset as usize)? }) as u32
    };
    save(&PendingCall {
        addr: unsafe { ctx.read_at(addr_offset as usize)? },
        len: unsafe { ctx.read_at(len_offset as usize)? },
        prot,
        ..Default::default()
    });
    Ok(0)
}

/// Whether a syscall's return value is an error (-4095..-1: -errno).
#[inline(always)]
fn is_error(ret: i64) -> bool {
    (-4095..0).contains(&ret)
}

/// At syscall exit: the saved call of the current thread, if the call succeeded
/// (returned 0) and the process is still in scope.
#[inline(always)]
pub fn take_succeeded(
    ctx: &TracePointContext,
) -> Result<Option<(u32, ScopeEntry, PendingCall)>, i32> {
    let Some((tgid, call, ret)) = take(ctx)? else {
        return Ok(None);
    };
    if ret != 0 {
        return Ok(None);
    }
    Ok(scope::get(tgid).map(|scope| (tgid, scope, call)))
}

/// At exit of a call that returns an address (mmap, mremap): the saved call of the
/// current thread and that address, if the call succeeded and the process is still in
/// scope.
#[inline(always)]
pub fn take_mapped(
    ctx: &TracePointContext,
) -> Result<Option<(u32, ScopeEntry, PendingCall, u64)>, i32> {
    let Some((tgid, call, ret)) = take(ctx)? else {
        return Ok(None);
    };
    if is_error(ret) {
        return Ok(None);
    }
    Ok(scope::get(tgid).map(|scope| (tgid, scope, call, ret as u64)))
}

/// At syscall exit: the current thread's saved call and the syscall's return value.
#[inline(always)]
pub fn take(ctx: &TracePointContext) -> Result<Option<(u32, PendingCall, i64)>, i32> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    let Some(call) = (unsafe { PENDING_CALLS.get(tid) }).copied() else {
        return Ok(None);
    };
    let _ = PENDING_CALLS.remove(tid);
    let ret: i64 = unsafe { ctx.read_at(tracepoint_offsets().exit_ret as usize)? };
    Ok(Some(((pid_tgid >> 32) as u32, call, ret)))
}

/// Forgets a thread's saved call (it exited inside the syscall).
#[inline(always)]
pub fn forget(tid: u32) {
    let _ = PENDING_CALLS.remove(tid);
}
