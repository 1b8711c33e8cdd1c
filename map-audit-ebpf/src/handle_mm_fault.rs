//! A kprobe on `handle_mm_fault`, the architecture-neutral fault path: for kernels or
//! architectures without the `exceptions:page_fault_*` tracepoints. One program covers
//! user and kernel writes (`FAULT_FLAG_USER` tells them apart). Needs CONFIG_KPROBES.

use aya_ebpf::{EbpfContext, macros::kprobe, programs::ProbeContext};

use crate::{
    counters::Nesting,
    write_fault::{self, FAULT_USER, FAULT_WRITE},
};

const FAULT_FLAG_WRITE: u32 = 1 << 0;
/// A retry of a fault already seen once: not a new write.
const FAULT_FLAG_TRIED: u32 = 1 << 5;
const FAULT_FLAG_USER: u32 = 1 << 6;

/// vm_fault_t handle_mm_fault(struct vm_area_struct *vma, unsigned long address,
///                            unsigned int flags, struct pt_regs *regs)
#[kprobe(function = "handle_mm_fault")]
pub fn handle_mm_fault(ctx: ProbeContext) -> u32 {
    if let (Some(address), Some(flags)) = (ctx.arg::<u64>(1), ctx.arg::<u32>(2)) {
        report(&ctx, address, flags);
    }
    0
}

/// A `handle_mm_fault` call as a write fault, from its `address` and fault `flags`
/// (shared with the fentry hook).
#[inline(always)]
pub fn report<C: EbpfContext>(ctx: &C, address: u64, flags: u32) {
    if flags & FAULT_FLAG_TRIED != 0 {
        return;
    }
    // The x86 error code the tracepoints carry, rebuilt from the fault flags.
    let mut error_code = 0;
    if flags & FAULT_FLAG_WRITE != 0 {
        error_code |= FAULT_WRITE;
    }
    if flags & FAULT_FLAG_USER != 0 {
        error_code |= FAULT_USER;
    }
    write_fault::report(
        ctx,
        address,
        error_code,
        flags & FAULT_FLAG_USER == 0,
        None,
        Nesting::Preemptible,
    );
}
