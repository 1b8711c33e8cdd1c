//! Bumps the per-CPU produced/lost counters (indices in `map_audit_common::counters`).

use core::intrinsics::{AtomicOrdering, atomic_xadd};

use crate::maps::COUNTERS;

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(slot) = COUNTERS.get_ptr_mut(index) {
        // Atomic even per CPU: syscall tracepoints are preemptible on recent kernels, so
        // another program can run on this CPU between a plain load and store.
        unsafe { add_one(slot) };
    }
}

/// How a program may bump this CPU's counters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Nesting {
    /// The program runs with interrupts off (the page-fault tracepoints fire in the
    /// exception handler before it enables them): nothing else runs on this CPU between
    /// a plain load and store of a slot (a fault program nested by a faulting user read
    /// runs inside that helper call), so a plain add is exact, and ~10 ns cheaper than
    /// an atomic one on the fault path.
    IrqsOff,
    /// The program may be preempted or interrupted by another that bumps the same slot.
    Preemptible,
}

/// `bump`, with a plain add where `nesting` allows it.
#[inline(always)]
pub fn bump_in(nesting: Nesting, index: u32) {
    let Some(slot) = COUNTERS.get_ptr_mut(index) else {
        return;
    };
    match nesting {
        Nesting::IrqsOff => unsafe { *slot += 1 },
        Nesting::Preemptible => unsafe { add_one(slot) },
    }
}

/// Atomically adds one to `*slot`. The result is unused, so this is a plain BPF atomic
/// add (no fetch, any BPF CPU version).
///
/// # Safety
/// `slot` points into a map value.
#[inline(always)]
pub unsafe fn add_one(slot: *mut u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, 1) };
}

/// Atomically subtracts one from `*slot` (an add of `u64::MAX`, like `add_one`).
///
/// # Safety
/// `slot` points into a map value.
#[cfg(feature = "kernel-5-10")]
#[inline(always)]
pub unsafe fn sub_one(slot: *mut u64) {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(slot, u64::MAX) };
}
