//! Loops over a step function. In the object for 5.17+ they run under `bpf_loop`, whose
//! body the verifier checks once. The object for older kernels (feature `kernel-5-10`)
//! has bounded loops, whose iterations the verifier checks one by one; there a step
//! declared with `step!` is a global function, which the verifier checks once on its
//! own (as it checks a callback), and each caller passes a smaller bound where it can
//! (`bound(full, older)`) and hands what does not fit to the agent, as it does when the
//! full bound runs out.

use core::ffi::c_void;

/// A loop body that takes its state from per-CPU maps: `(index)`, non-zero stops the
/// loop. Declared with `step!`.
#[cfg(not(feature = "kernel-5-10"))]
pub type Step = extern "C" fn(u64, *mut c_void) -> i64;
#[cfg(feature = "kernel-5-10")]
pub type Step = extern "C" fn(u64) -> i64;

/// A loop body with a context on the caller's stack: `(index, context)`. Never a global
/// function (their pointer arguments must be the program's context before 5.17), so
/// only for small bodies.
pub type StepWith = extern "C" fn(u64, *mut c_void) -> i64;

/// Declares a `Step`: `fn name(index) -> i64 { ... }`.
macro_rules! step {
    ($(#[$meta:meta])* fn $name:ident($index:ident) -> i64 $body:block) => {
        $(#[$meta])*
        #[cfg(not(feature = "kernel-5-10"))]
        #[inline(never)]
        extern "C" fn $name($index: u64, _ctx: *mut core::ffi::c_void) -> i64 $body

        $(#[$meta])*
        #[cfg(feature = "kernel-5-10")]
        #[unsafe(no_mangle)]
        pub extern "C" fn $name($index: u64) -> i64 {
            // Used, even by a step that ignores it: LLVM passes an unused argument as
            // undefined, and the verifier refuses a global function a non-scalar.
            let $index = core::hint::black_box($index);
            $body
        }
    };
}
pub(crate) use step;

/// Runs `step(0)`, `step(1)`, ... for indices below `count` (at most `max`, a constant
/// the verifier of older kernels needs) until one returns non-zero.
#[inline(always)]
pub fn repeat(max: u32, count: u32, step: Step) {
    #[cfg(not(feature = "kernel-5-10"))]
    unsafe {
        let _ = max;
        aya_ebpf::helpers::generated::bpf_loop(
            count,
            step as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
    }
    #[cfg(feature = "kernel-5-10")]
    for index in 0..max {
        if index >= count || step(u64::from(index)) != 0 {
            break;
        }
    }
}

/// `repeat` for a `StepWith`, passing it `ctx`.
#[inline(always)]
pub fn repeat_with(max: u32, step: StepWith, ctx: *mut c_void) {
    #[cfg(not(feature = "kernel-5-10"))]
    unsafe {
        aya_ebpf::helpers::generated::bpf_loop(max, step as *mut c_void, ctx, 0);
    }
    #[cfg(feature = "kernel-5-10")]
    for index in 0..max {
        if step(u64::from(index), ctx) != 0 {
            break;
        }
    }
}

/// `full` in the object for 5.17+, `older` in the one for older kernels.
pub const fn bound(full: u32, older: u32) -> u32 {
    if cfg!(feature = "kernel-5-10") {
        older
    } else {
        full
    }
}
