//! `exceptions:page_fault_kernel` as a raw tracepoint: writes the kernel does into the
//! process's memory on its behalf (`read()` into a fresh mapping, `recv`,
//! `copy_to_user`). They never show on `page_fault_user`.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::{counters::Nesting, write_fault};

/// TP_PROTO(unsigned long address, struct pt_regs *regs, unsigned long error_code).
#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel(ctx: RawTracePointContext) -> i32 {
    write_fault::report(&ctx, ctx.arg(0), ctx.arg(2), true, None, Nesting::IrqsOff);
    0
}
