//! What the fault hooks share: the filter (a write by an in-scope process inside one
//! of its tracked writable regions) and filling the fault record with the user stack.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_stack},
};
use map_audit_common::{
    MAX_STACK_DEPTH,
    counters::{
        FAULTS_FILTERED, FAULTS_LOST_RINGBUF_FULL, FAULTS_MATCHED, STACKS_FAILED, STACKS_TRUNCATED,
    },
    records::{
        ERROR_CODE_UNKNOWN, FaultRecord, KIND_KERNEL_WRITE_FAULT, KIND_WRITE_FAULT,
        KernelFaultRecord, MAX_KERNEL_STACK_DEPTH,
    },
    region::Region,
};

use crate::{
    counters::bump, maps::EVENTS, rate_limit, records, region_filter, region_table, scope,
};

/// x86 page-fault error code bit: the access was a write.
pub const FAULT_WRITE: u64 = 0x2;
/// x86 page-fault error code bit: the access came from user mode.
pub const FAULT_USER: u64 = 0x4;

/// The tracked writable region an audited write fault at `address` falls in.
#[inline(always)]
fn audited_region(address: u64, error_code: u64) -> Option<Region> {
    if error_code != ERROR_CODE_UNKNOWN && error_code & FAULT_WRITE == 0 {
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let scope = scope::get(tgid)?;
    let region = region_table::lookup_for_fault(tgid, &scope, address)?;
    if !region.is_writable() {
        return None;
    }
    if !region_filter::audited(&region) {
        bump(FAULTS_FILTERED);
        return None;
    }
    bump(FAULTS_MATCHED);
    if !rate_limit::admit(tgid) {
        return None;
    }
    Some(region)
}

/// Reports an audited write fault at `address`: a fault record with the user stack, or
/// (`kernel`: the kernel wrote for the process) one with the kernel stack as well.
#[inline(always)]
pub fn report<C: EbpfContext>(ctx: &C, address: u64, error_code: u64, kernel: bool) {
    // Kernel faults on kernel addresses (the upper half) are not the process's memory.
    if kernel && address >> 63 != 0 {
        return;
    }
    let Some(region) = audited_region(address, error_code) else {
        return;
    };
    if !kernel {
        let Some(mut entry) = EVENTS.reserve::<FaultRecord>(0) else {
            bump(FAULTS_LOST_RINGBUF_FULL);
            return;
        };
        unsafe {
            fill(
                ctx,
                entry.as_mut_ptr(),
                KIND_WRITE_FAULT,
                address,
                error_code,
                &region,
            )
        };
        entry.submit(records::batched_wakeup_flags());
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<KernelFaultRecord>(0) else {
        bump(FAULTS_LOST_RINGBUF_FULL);
        return;
    };
    let record = entry.as_mut_ptr();
    unsafe {
        fill(
            ctx,
            &raw mut (*record).fault,
            KIND_KERNEL_WRITE_FAULT,
            address,
            error_code,
            &region,
        );
        (*record).kernel_stack_bytes = stack(
            ctx,
            (*record).kernel_stack.as_mut_ptr(),
            MAX_KERNEL_STACK_DEPTH,
            0,
        );
    }
    entry.submit(records::batched_wakeup_flags());
}

/// Fills `record` (already reserved in the ring buffer) with the fault and the user
/// stack.
#[inline(always)]
unsafe fn fill<C: EbpfContext>(
    ctx: &C,
    record: *mut FaultRecord,
    kind: u32,
    address: u64,
    error_code: u64,
    region: &Region,
) {
    unsafe {
        (*record).header = records::header(kind);
        (*record).address = address;
        (*record).error_code = error_code;
        (*record).region = *region;
        (*record).stack_bytes = stack(
            ctx,
            (*record).stack.as_mut_ptr(),
            MAX_STACK_DEPTH,
            BPF_F_USER_STACK.into(),
        );
    }
}

/// `bpf_get_stack` into `frames`, counting failed and truncated stacks.
#[inline(always)]
unsafe fn stack<C: EbpfContext>(ctx: &C, frames: *mut u64, depth: usize, flags: u64) -> i64 {
    let bytes = unsafe { bpf_get_stack(ctx.as_ptr(), frames.cast(), (depth * 8) as u32, flags) };
    if bytes < 0 {
        bump(STACKS_FAILED);
    } else if bytes as usize == depth * 8 {
        bump(STACKS_TRUNCATED);
    }
    bytes
}
