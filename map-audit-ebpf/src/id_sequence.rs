//! Ids for regions and scope generations, from one increasing sequence (`ID_SEQUENCE`):
//! an id above a system call's `current_seq()` at entry belongs to a region made after
//! the call began (`region::change_applies`).
//!
//! Before 5.12 BPF has no fetch-and-add, only an add without result. There an id is
//! the counter read back after the add, shifted, with this CPU's number below it: two
//! CPUs that read the same count get different ids, one CPU never reads the same count
//! twice (its next add comes after its read), and an id taken after a call's entry read
//! the counter is above every id the entry could have seen (`current_seq` fills the
//! CPU bits with ones).

use crate::maps::ID_SEQUENCE;

/// Bits of an older kernel's id below the count: the CPU number.
#[cfg(feature = "kernel-5-10")]
const CPU_BITS: u32 = 10;

/// A fresh id for a region, unique for the agent's lifetime.
#[inline(always)]
pub fn next_id() -> u64 {
    let Some(seq) = ID_SEQUENCE.get_ptr_mut(0) else {
        return 0;
    };
    #[cfg(not(feature = "kernel-5-10"))]
    {
        // Fetch-and-add (BPF CPU v3), written out: the compiler's atomic intrinsic
        // emits a plain add here and then treats its operand as the old value.
        let mut value: u64 = 1;
        unsafe {
            core::arch::asm!(
                "{value} = atomic_fetch_add((u64 *)({seq} + 0), {value})",
                value = inout(reg) value,
                seq = in(reg) seq,
            );
        }
        value + 1
    }
    #[cfg(feature = "kernel-5-10")]
    {
        unsafe { crate::counters::add_one(seq) };
        let count = unsafe { core::ptr::read_volatile(seq) };
        let cpu = unsafe { aya_ebpf::helpers::bpf_get_smp_processor_id() };
        count << CPU_BITS | u64::from(cpu & ((1 << CPU_BITS) - 1))
    }
}

/// A fresh scope generation: unique per process for the agent's lifetime (processes
/// may share one).
#[inline(always)]
pub fn next_generation() -> u32 {
    #[cfg(not(feature = "kernel-5-10"))]
    {
        next_id() as u32
    }
    #[cfg(feature = "kernel-5-10")]
    {
        (next_id() >> CPU_BITS) as u32
    }
}

/// Every id handed out so far is at most this: a system call records it at entry
/// (`PendingCall::seq`).
#[inline(always)]
pub fn current_seq() -> u64 {
    let count = match ID_SEQUENCE.get_ptr(0) {
        Some(seq) => unsafe { core::ptr::read_volatile(seq) },
        None => 0,
    };
    #[cfg(not(feature = "kernel-5-10"))]
    {
        count
    }
    #[cfg(feature = "kernel-5-10")]
    {
        count << CPU_BITS | ((1 << CPU_BITS) - 1)
    }
}
