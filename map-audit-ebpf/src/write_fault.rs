//! What the fault hooks share: the filter (a write by an in-scope process inside one
//! of its tracked writable regions), kernel-side aggregation, and the fault record with
//! the user stack.

use aya_ebpf::{
    EbpfContext,
    bindings::{BPF_F_USER_STACK, pt_regs},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, generated::bpf_get_stack},
};
use map_audit_common::{
    MAX_STACK_DEPTH,
    counters::{
        FAULTS_COUNTED_IN_KERNEL, FAULTS_FILTERED, FAULTS_LOST_RINGBUF_FULL, FAULTS_MATCHED,
        STACKS_FAILED, STACKS_IN_ANONYMOUS_CODE, STACKS_NO_UNWIND_INFO, STACKS_RECALLED,
        STACKS_TRUNCATED, STACKS_UNREADABLE,
    },
    records::{
        ERROR_CODE_UNKNOWN, FAULT_STACK_TRUNCATED, FAULT_VIA_PARENT, FaultRecord,
        KIND_KERNEL_WRITE_FAULT, KIND_WRITE_FAULT, KernelFaultRecord, MAX_KERNEL_STACK_DEPTH,
    },
    region::{PATH_PENDING, Region},
    tally::TallyKey,
    unwind::{
        STACK_END_ANONYMOUS_CODE, STACK_END_COMPLETE, STACK_END_DEPTH_LIMIT,
        STACK_END_NO_UNWIND_INFO, STACK_END_UNREADABLE,
    },
};

use crate::{
    counters::{Nesting, bump, bump_in},
    fault_tally,
    maps::{EVENTS, FAULT_SCRATCH, agent_config},
    rate_limit, records, region_cache, region_filter, region_table, stack_memo, stack_snapshot,
    task_regs, tick_clock,
    user_stack::{self, Frames, STACK_END_TABLE_PENDING, UserRegs},
};

/// x86 page-fault error code bit: the access was a write.
pub const FAULT_WRITE: u64 = 0x2;
/// x86 page-fault error code bit: the access came from user mode.
pub const FAULT_USER: u64 = 0x4;

/// The tracked writable region an audited write fault at `address` falls in, and
/// whether it is the process's own (else its parent's, right after a fork).
#[inline(always)]
fn audited_region(
    tgid: u32,
    address: u64,
    error_code: u64,
    nesting: Nesting,
) -> Option<(Region, bool)> {
    if error_code != ERROR_CODE_UNKNOWN && error_code & FAULT_WRITE == 0 {
        return None;
    }
    let (mut region, own) = region_cache::region_for_fault(tgid, address)?;
    if !region.is_writable() {
        return None;
    }
    if !region_filter::audited(&mut region) {
        bump(FAULTS_FILTERED);
        return None;
    }
    bump_in(nesting, FAULTS_MATCHED);
    Some((region, own))
}

/// Reports an audited write fault at `address`: counted in its kernel tally, or a fault
/// record with the user stack, or (`kernel`: the kernel wrote for the process) one with
/// the kernel stack as well. The user stack is walked from `user_regs` when the hook
/// has them (and they can be read), else by `bpf_get_stack`. `nesting`: the hook's
/// context, for the counters of the common path.
#[inline(always)]
pub fn report<C: EbpfContext>(
    ctx: &C,
    address: u64,
    error_code: u64,
    kernel: bool,
    user_regs: Option<UserRegs>,
    nesting: Nesting,
) {
    // Kernel faults on kernel addresses (the upper half) are not the process's memory.
    if kernel && address >> 63 != 0 {
        return;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some((region, own)) = audited_region(tgid, address, error_code, nesting) else {
        return;
    };
    let flags = if own { 0 } else { FAULT_VIA_PARENT };
    if region.is_shared_file() {
        records::page_dirtied(&region, address);
    }
    if kernel {
        report_kernel_write(ctx, tgid, address, error_code, &region, flags);
        return;
    }
    let Some(record) = FAULT_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // The walk writes the record's frames through a pointer of its own: no `&mut` to
    // the record may live across it.
    unsafe { (*record).flags = flags };
    let tables = region_table::walk_tables(tgid, &region, own);
    let user_regs = user_regs.and_then(UserRegs::known);
    if let Some(regs) = user_regs
        && own
        && recalled(tgid, &region, address, regs, nesting)
    {
        return;
    }
    let walked = user_regs.map(|regs| user_stack::walk(regs, Frames::Fault, tables));
    let record = unsafe { &mut *record };
    // Only stacks walked here are hashed; the agent decides a `--path` still pending,
    // and gives a parent's region (after a fork) to the child's copy of it.
    let mut stack_hash = 0;
    let mut snapshot = false;
    record.stack_end = STACK_END_COMPLETE;
    match walked {
        Some(walked) if walked.end == STACK_END_TABLE_PENDING && stack_snapshot::room() => {
            // Until the agent finishes it, it is as far as the kernel got.
            record.stack_bytes = walked.bytes;
            record.stack_end = STACK_END_NO_UNWIND_INFO;
            record.flags |= FAULT_STACK_TRUNCATED;
            snapshot = true;
        }
        Some(walked) => {
            // A walk the agent cannot finish now (its records would crowd the ring
            // buffer) is tallied as far as it got.
            let end = user_stack::reported_end(walked.end);
            record.stack_end = end;
            if end != STACK_END_COMPLETE {
                bump(stack_end_counter(end));
                record.flags |= FAULT_STACK_TRUNCATED;
            }
            record.stack_bytes = walked.bytes;
            // `own` read back from the map value, not kept from before the walk: the
            // verifier would walk the stack once per value it knows (2.3 s at load).
            let own = unsafe { core::ptr::read_volatile(&record.flags) } & FAULT_VIA_PARENT == 0;
            if agent_config().aggregate_in_kernel != 0 && region.path_filter != PATH_PENDING && own
            {
                stack_hash = walked.hash;
            }
        }
        None => {
            record.stack_bytes = user_stack_by_helper(ctx, &mut record.stack);
            if record.stack_bytes == (8 * MAX_STACK_DEPTH) as i64 {
                record.flags |= FAULT_STACK_TRUNCATED;
                record.stack_end = STACK_END_DEPTH_LIMIT;
            }
        }
    }
    let tally_key = TallyKey {
        tgid,
        _pad: 0,
        region_id: region.id,
        stack_hash,
    };
    let now = unsafe { bpf_ktime_get_ns() };
    if stack_hash != 0 && fault_tally::count(&tally_key, address, now) {
        bump_in(nesting, FAULTS_COUNTED_IN_KERNEL);
        return;
    }
    if !rate_limit::admit(tgid) {
        return;
    }
    fill(record, KIND_WRITE_FAULT, address, error_code, &region, now);
    record.stack_hash = stack_hash;
    // The interval the record is stamped with is the one its tally opens: read once, so
    // a flush between the two cannot open the next interval without its record.
    let epoch = fault_tally::epoch();
    record.epoch = epoch as u32;
    if snapshot {
        stack_snapshot::send(record);
        return;
    }
    // Only the frames the stack has go to the ring buffer.
    let len = FaultRecord::wire_len(record.stack_bytes);
    let bytes =
        unsafe { core::slice::from_raw_parts((record as *const FaultRecord).cast::<u8>(), len) };
    if EVENTS
        .output::<[u8]>(bytes, records::batched_wakeup_flags(len as u64))
        .is_err()
    {
        bump(FAULTS_LOST_RINGBUF_FULL);
        return;
    }
    if stack_hash != 0 {
        fault_tally::open(&tally_key, address, now, epoch);
    }
}

/// `report` for the `page_fault_user` tracepoint's arguments (address, the user
/// registers, error code), whichever way the tracepoint is attached.
#[inline(always)]
pub fn report_user_exception<C: EbpfContext>(
    ctx: &C,
    address: u64,
    regs: *const pt_regs,
    error_code: u64,
) {
    let regs = Some(UserRegs::At(regs));
    report(ctx, address, error_code, false, regs, Nesting::IrqsOff);
}

/// Counts the fault in its kernel tally with the stack this CPU memoised for its
/// registers, if the memo still holds and the tally is open (else the fault walks).
#[inline(always)]
fn recalled(tgid: u32, region: &Region, address: u64, regs: UserRegs, nesting: Nesting) -> bool {
    let Some((ip, sp, bp, _)) = regs.read() else {
        return false;
    };
    if agent_config().aggregate_in_kernel == 0 || region.path_filter == PATH_PENDING {
        return false;
    }
    let Some((stack_hash, end)) = stack_memo::recall(tgid, region.generation, ip, sp, bp) else {
        return false;
    };
    if stack_hash == 0 {
        return false;
    }
    let key = TallyKey {
        tgid,
        _pad: 0,
        region_id: region.id,
        stack_hash,
    };
    if !fault_tally::count(&key, address, tick_clock::now(nesting)) {
        return false;
    }
    if end != STACK_END_COMPLETE {
        bump(stack_end_counter(end));
    }
    bump_in(nesting, FAULTS_COUNTED_IN_KERNEL);
    bump_in(nesting, STACKS_RECALLED);
    true
}

/// A write the kernel did for the process: a record with both stacks (rare; never
/// aggregated in the kernel).
#[inline(always)]
fn report_kernel_write<C: EbpfContext>(
    ctx: &C,
    tgid: u32,
    address: u64,
    error_code: u64,
    region: &Region,
    flags: u32,
) {
    if !rate_limit::admit(tgid) {
        return;
    }
    // The user stack at the system call, walked like a user fault's from the task's
    // saved user registers (into this CPU's fault record first: the walk writes there).
    let user_regs = task_regs::current_user_regs();
    let tables = region_table::walk_tables(tgid, region, flags & FAULT_VIA_PARENT == 0);
    let walked = user_stack::walk(UserRegs::At(user_regs), Frames::Fault, tables);
    let Some(scratch) = FAULT_SCRATCH.get_ptr(0) else {
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<KernelFaultRecord>(0) else {
        bump(FAULTS_LOST_RINGBUF_FULL);
        return;
    };
    let record = unsafe { &mut *entry.as_mut_ptr() };
    let now = unsafe { bpf_ktime_get_ns() };
    fill(
        &mut record.fault,
        KIND_KERNEL_WRITE_FAULT,
        address,
        error_code,
        region,
        now,
    );
    record.fault.stack_hash = 0;
    record.fault.flags = flags;
    record.fault.epoch = fault_tally::epoch() as u32;
    // Rare: not worth a snapshot.
    let end = user_stack::reported_end(walked.end);
    record.fault.stack = unsafe { (*scratch).stack };
    record.fault.stack_bytes = walked.bytes;
    record.fault.stack_end = end;
    if end != STACK_END_COMPLETE {
        bump(stack_end_counter(end));
        record.fault.flags |= FAULT_STACK_TRUNCATED;
    }
    record.kernel_stack_bytes = stack(
        ctx,
        record.kernel_stack.as_mut_ptr(),
        MAX_KERNEL_STACK_DEPTH,
        0,
    );
    entry.submit(records::batched_wakeup_flags(
        size_of::<KernelFaultRecord>() as u64,
    ));
}

/// The counter of stacks that ended for `end` (not complete).
#[inline(always)]
pub fn stack_end_counter(end: u32) -> u32 {
    match end {
        STACK_END_NO_UNWIND_INFO => STACKS_NO_UNWIND_INFO,
        STACK_END_UNREADABLE => STACKS_UNREADABLE,
        STACK_END_ANONYMOUS_CODE => STACKS_IN_ANONYMOUS_CODE,
        _ => STACKS_TRUNCATED,
    }
}

/// A walk's (`stack_bytes`, `stack_end`) for a record whose stack it filled, its
/// early end counted; a walk that could not start is an unreadable stack.
#[inline(always)]
pub fn walk_result(walked: user_stack::Walked) -> (i64, u32) {
    let (bytes, end) = (walked.bytes, walked.end);
    if end != STACK_END_COMPLETE {
        bump(stack_end_counter(end));
    }
    (bytes, end)
}

/// Fills the fixed part of a fault record.
#[inline(always)]
fn fill(
    record: &mut FaultRecord,
    kind: u32,
    address: u64,
    error_code: u64,
    region: &Region,
    now: u64,
) {
    record.header = records::header_at(kind, now);
    record.address = address;
    record.error_code = error_code;
    record.region = *region;
}

#[inline(always)]
fn user_stack_by_helper<C: EbpfContext>(ctx: &C, frames: &mut [u64; MAX_STACK_DEPTH]) -> i64 {
    stack(
        ctx,
        frames.as_mut_ptr(),
        MAX_STACK_DEPTH,
        BPF_F_USER_STACK.into(),
    )
}

/// `bpf_get_stack` into `frames`, counting failed and truncated stacks.
#[inline(always)]
fn stack<C: EbpfContext>(ctx: &C, frames: *mut u64, depth: usize, flags: u64) -> i64 {
    let bytes = unsafe { bpf_get_stack(ctx.as_ptr(), frames.cast(), (depth * 8) as u32, flags) };
    if bytes < 0 {
        bump(STACKS_FAILED);
    } else if bytes as usize == depth * 8 {
        bump(STACKS_TRUNCATED);
    }
    bytes
}
