//! `exceptions:page_fault_user` as a raw tracepoint (the cheapest attach measured here:
//! 47 ns per fault empty, against 82 ns for tp_btf and 140 ns for a perf tracepoint).
//! Keeps write faults of in-scope processes inside tracked writable regions, with the
//! user stack.

use aya_ebpf::{
    EbpfContext,
    bindings::BPF_F_USER_STACK,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_get_stack},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
};
use map_audit_common::{
    MAX_STACK_DEPTH,
    counters::{FAULTS_LOST_RINGBUF_FULL, FAULTS_MATCHED, STACKS_FAILED, STACKS_TRUNCATED},
    records::{FaultRecord, KIND_WRITE_FAULT},
};

use crate::{counters::bump, maps::EVENTS, records, region_table, scope};

/// x86 page-fault error code bit: the access was a write.
const FAULT_WRITE: u64 = 0x2;

/// TP_PROTO(unsigned long address, struct pt_regs *regs, unsigned long error_code).
#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user(ctx: RawTracePointContext) -> i32 {
    let error_code: u64 = ctx.arg(2);
    if error_code & FAULT_WRITE == 0 {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let Some(scope) = scope::get(tgid) else {
        return 0;
    };
    let address: u64 = ctx.arg(0);
    let Some(region) = region_table::lookup_for_fault(tgid, &scope, address) else {
        return 0;
    };
    if !region.is_writable() {
        return 0;
    }
    bump(FAULTS_MATCHED);
    let Some(mut entry) = EVENTS.reserve::<FaultRecord>(0) else {
        bump(FAULTS_LOST_RINGBUF_FULL);
        return 0;
    };
    let record = entry.as_mut_ptr();
    unsafe {
        (*record).header = records::header(KIND_WRITE_FAULT);
        (*record).address = address;
        (*record).error_code = error_code;
        (*record).region = region;
        let stack_bytes = bpf_get_stack(
            ctx.as_ptr(),
            (*record).stack.as_mut_ptr().cast(),
            (MAX_STACK_DEPTH * 8) as u32,
            BPF_F_USER_STACK.into(),
        );
        if stack_bytes < 0 {
            bump(STACKS_FAILED);
        } else if stack_bytes as usize == MAX_STACK_DEPTH * 8 {
            bump(STACKS_TRUNCATED);
        }
        (*record).stack_bytes = stack_bytes;
    }
    entry.submit(records::batched_wakeup_flags());
    0
}
