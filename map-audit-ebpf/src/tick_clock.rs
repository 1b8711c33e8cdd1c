//! The time a fault counted in its kernel tally is stamped with: this CPU's first
//! clock reading in the current kernel tick, so the clock (~35 ns a call here) is read
//! once per tick instead of once per fault; a jiffies read costs a few ns. The stamp
//! is at most one tick (1 to 10 ms, `CONFIG_HZ`) early, never late.

use aya_ebpf::helpers::{bpf_ktime_get_ns, generated::bpf_jiffies64};

use crate::{counters::Nesting, maps::TICK_CLOCK};

/// This CPU's clock reading and the jiffies it was taken in.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TickClock {
    jiffies: u64,
    ns: u64,
}

/// Now, to the tick where `nesting` allows the per-CPU memo (a preemptible program
/// could leave it half written for another), else exactly.
#[inline(always)]
pub fn now(nesting: Nesting) -> u64 {
    // The older kernels' object: tracing programs there have no `bpf_jiffies64`.
    if cfg!(feature = "kernel-5-10") || nesting == Nesting::Preemptible {
        return unsafe { bpf_ktime_get_ns() };
    }
    let Some(clock) = TICK_CLOCK.get_ptr_mut(0) else {
        return unsafe { bpf_ktime_get_ns() };
    };
    let clock = unsafe { &mut *clock };
    let jiffies = unsafe { bpf_jiffies64() };
    if clock.jiffies != jiffies || clock.ns == 0 {
        clock.ns = unsafe { bpf_ktime_get_ns() };
        clock.jiffies = jiffies;
    }
    clock.ns
}
