//! `exceptions:page_fault_user` as a raw tracepoint (the cheapest attach measured here:
//! 47 ns per fault empty, against 82 ns for tp_btf and 140 ns for a perf tracepoint):
//! writes by the process's own instructions.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};
use map_audit_common::{
    counters::FAULTS_LOST_RINGBUF_FULL,
    records::{FaultRecord, KIND_WRITE_FAULT},
};

use crate::{counters::bump, maps::EVENTS, records, write_fault};

/// TP_PROTO(unsigned long address, struct pt_regs *regs, unsigned long error_code).
#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user(ctx: RawTracePointContext) -> i32 {
    let (address, error_code): (u64, u64) = (ctx.arg(0), ctx.arg(2));
    let Some(region) = write_fault::audited_region(address, error_code) else {
        return 0;
    };
    let Some(mut entry) = EVENTS.reserve::<FaultRecord>(0) else {
        bump(FAULTS_LOST_RINGBUF_FULL);
        return 0;
    };
    unsafe {
        write_fault::fill(
            &ctx,
            entry.as_mut_ptr(),
            KIND_WRITE_FAULT,
            address,
            error_code,
            &region,
        )
    };
    entry.submit(records::batched_wakeup_flags());
    0
}
