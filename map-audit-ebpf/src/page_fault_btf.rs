//! The fault tracepoints as BTF tracepoints (`tp_btf`): the same arguments as the raw
//! tracepoints, typed by BTF. Chosen with `--fault-hook tp-btf` or when raw
//! tracepoints are unavailable.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{counters::Nesting, write_fault};

#[btf_tracepoint(function = "page_fault_user")]
pub fn page_fault_user_btf(ctx: BtfTracePointContext) -> i32 {
    write_fault::report_user_exception(&ctx, ctx.arg(0), ctx.arg(1), ctx.arg(2));
    0
}

#[btf_tracepoint(function = "page_fault_kernel")]
pub fn page_fault_kernel_btf(ctx: BtfTracePointContext) -> i32 {
    write_fault::report(&ctx, ctx.arg(0), ctx.arg(2), true, None, Nesting::IrqsOff);
    0
}
