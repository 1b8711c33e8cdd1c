//! The fault tracepoints as classic (perf) tracepoints: the slowest of the three
//! tracepoint attachments, and the one every kernel with `exceptions:*` offers. Field
//! offsets come from tracefs.

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

use crate::{counters::Nesting, maps::tracepoint_offsets, write_fault};

#[inline(always)]
fn report(ctx: &TracePointContext, kernel: bool) -> u32 {
    let off = tracepoint_offsets();
    let address = unsafe { ctx.read_at::<u64>(off.page_fault_address as usize) };
    let error_code = unsafe { ctx.read_at::<u64>(off.page_fault_error_code as usize) };
    if let (Ok(address), Ok(error_code)) = (address, error_code) {
        write_fault::report(ctx, address, error_code, kernel, None, Nesting::IrqsOff);
    }
    0
}

#[tracepoint]
pub fn page_fault_user_tp(ctx: TracePointContext) -> u32 {
    report(&ctx, false)
}

#[tracepoint]
pub fn page_fault_kernel_tp(ctx: TracePointContext) -> u32 {
    report(&ctx, true)
}
