//! fentry on `handle_mm_fault`: the kprobe hook's attach point through a BPF trampoline
//! (cheaper than a kprobe's breakpoint; needs BTF and ftrace direct calls, which
//! kernel lockdown forbids). Same arguments, same handling.

use aya_ebpf::{macros::fentry, programs::FEntryContext};

use crate::handle_mm_fault;

#[fentry(function = "handle_mm_fault")]
pub fn handle_mm_fault_fentry(ctx: FEntryContext) -> u32 {
    let (address, flags): (u64, u32) = (ctx.arg(1), ctx.arg(2));
    handle_mm_fault::report(&ctx, address, flags);
    0
}
