//! `exceptions:page_fault_kernel` as a raw tracepoint: writes the kernel does into the
//! process's memory on its behalf (`read()` into a fresh mapping, `recv`,
//! `copy_to_user`). They never show on `page_fault_user`. Reported with the user stack
//! (where the system call came from) and the kernel stack.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use map_audit_common::{
    counters::FAULTS_LOST_RINGBUF_FULL,
    records::{KIND_KERNEL_WRITE_FAULT, KernelFaultRecord, MAX_KERNEL_STACK_DEPTH},
};

use crate::{counters::bump, maps::EVENTS, records, write_fault};

/// TP_PROTO(unsigned long address, struct pt_regs *regs, unsigned long error_code).
#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: RawTracePointContext) -> i32 {
    let (address, error_code): (u64, u64) = (ctx.arg(0), ctx.arg(2));
    // Kernel faults on kernel addresses (the upper half) are not the process's memory.
    if address >> 63 != 0 {
        return 0;
    }
    let Some(region) = write_fault::audited_region(address, error_code) else {
        return 0;
    };
    let Some(mut entry) = EVENTS.reserve::<KernelFaultRecord>(0) else {
        bump(FAULTS_LOST_RINGBUF_FULL);
        return 0;
    };
    let record = entry.as_mut_ptr();
    unsafe {
        write_fault::fill(
            &ctx,
            &raw mut (*record).fault,
            KIND_KERNEL_WRITE_FAULT,
            address,
            error_code,
            &region,
        );
        (*record).kernel_stack_bytes = write_fault::stack(
            &ctx,
            (*record).kernel_stack.as_mut_ptr(),
            MAX_KERNEL_STACK_DEPTH,
            0,
        );
    }
    entry.submit(records::batched_wakeup_flags());
    0
}
