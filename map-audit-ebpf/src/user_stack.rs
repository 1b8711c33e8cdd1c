//! The user stack of a fault taken in user mode, walked here along the frame pointers.
//!
//! Why not `bpf_get_stack`: the kernel's user walker (perf_callchain_user) accepts a
//! frame pointer of 0, so every walk that reaches the outermost frame (`_start` clears
//! rbp) ends by reading address 0 - a nested kernel page fault per walk, measured here at
//! several hundred ns on each audited fault. This walk stops at a null, misaligned or
//! non-increasing frame pointer instead, and records the same frames otherwise.

use core::ffi::c_void;

use crate::maps::{STACK_WINDOW, WINDOW_WORDS};
use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_probe_read_kernel, bpf_probe_read_user,
        generated::{bpf_loop, bpf_probe_read_user as bpf_probe_read_user_raw},
    },
};
use map_audit_common::{
    MAX_STACK_DEPTH,
    tally::{STACK_HASH_SEED, stack_hash_step},
};

/// Where the walk starts: the fault's user registers.
#[derive(Clone, Copy)]
pub enum UserRegs {
    /// The `struct pt_regs *` a fault tracepoint passes, read only once the fault is
    /// known to be audited (two kernel reads saved on every other fault).
    At(*const pt_regs),
    Known {
        ip: u64,
        bp: u64,
    },
}

impl UserRegs {
    /// (ip, bp).
    #[inline(always)]
    fn read(self) -> Option<(u64, u64)> {
        match self {
            Self::At(regs) => {
                let ip = unsafe { bpf_probe_read_kernel(&raw const (*regs).rip) }.ok()?;
                let bp = unsafe { bpf_probe_read_kernel(&raw const (*regs).rbp) }.ok()?;
                Some((ip, bp))
            }
            Self::Known { ip, bp } => Some((ip, bp)),
        }
    }
}

/// A frame record as the x86-64 frame-pointer convention lays it out at `bp`.
#[repr(C)]
struct FrameRecord {
    caller_bp: u64,
    return_address: u64,
}

/// What a walk found.
pub struct Walked {
    /// Bytes of `frames` filled, like `bpf_get_stack`.
    pub bytes: i64,
    /// Frames remained beyond `MAX_STACK_DEPTH`.
    pub truncated: bool,
    /// `tally::stack_hash_step` over the frames.
    pub hash: u64,
}

/// Fills `frames` with the ip and the return addresses, innermost first; `None` when
/// the registers cannot be read. The frames go straight into `frames` (a map value).
///
/// One `bpf_loop` step per frame: the verifier checks the step once, and the code after
/// the walk once, where an unrolled walk left it with a state per depth and exit (the
/// fault program took 2.1 s to load, 0.5 s before the fork and interval checks came).
#[inline(always)]
pub fn walk(regs: UserRegs, frames: &mut [u64; MAX_STACK_DEPTH]) -> Option<Walked> {
    let (ip, bp) = regs.read()?;
    frames[0] = ip;
    let mut walk = FrameWalk {
        frames: frames.as_mut_ptr(),
        bp,
        depth: 1,
        hash: stack_hash_step(STACK_HASH_SEED, ip),
        window_base: 0,
        truncated: 0,
        _pad: 0,
    };
    unsafe {
        bpf_loop(
            MAX_STACK_DEPTH as u32,
            frame_step as *mut c_void,
            (&raw mut walk).cast(),
            0,
        );
    }
    Some(Walked {
        bytes: (walk.depth as i64).min(MAX_STACK_DEPTH as i64) * 8,
        truncated: walk.truncated != 0,
        hash: walk.hash,
    })
}

/// A frame-pointer walk in progress (on the caller's stack, the `bpf_loop` context).
#[repr(C)]
struct FrameWalk {
    /// The caller's frame buffer (`MAX_STACK_DEPTH` words in a map value).
    frames: *mut u64,
    /// The next frame record's address.
    bp: u64,
    depth: u64,
    hash: u64,
    /// User address of the window's first word; 0 when it holds nothing.
    window_base: u64,
    truncated: u32,
    _pad: u32,
}

/// One frame. The depth is the loop's index, which the verifier does not know, so it
/// checks this step once; a depth kept as a counter in the context would be a new
/// known constant each step, and the verifier would check each step anew.
#[inline(never)]
extern "C" fn frame_step(index: u64, ctx: *mut c_void) -> i64 {
    let walk = unsafe { &mut *ctx.cast::<FrameWalk>() };
    let bp = walk.bp;
    let depth = index + 1;
    if depth as usize >= MAX_STACK_DEPTH {
        walk.truncated = u32::from(bp != 0);
        return 1;
    }
    if bp == 0 || bp & 7 != 0 {
        return 1;
    }
    let mut window = StackWindow {
        words: STACK_WINDOW.get_ptr_mut(0),
        base: walk.window_base,
    };
    let Some(frame) = window.frame_at(bp) else {
        return 1;
    };
    walk.window_base = window.base;
    // Masked: the verifier checks the store against the buffer's 64 words.
    let slot = (depth as usize) & (MAX_STACK_DEPTH - 1);
    unsafe { *walk.frames.add(slot) = frame.return_address };
    walk.hash = stack_hash_step(walk.hash, frame.return_address);
    walk.depth = depth + 1;
    // Callers' frames sit at higher addresses; anything else is not a frame chain.
    walk.bp = if frame.caller_bp > bp {
        frame.caller_bp
    } else {
        0
    };
    0
}

/// A copy of `WINDOW_WORDS` words of the user stack: the frames of a call chain usually
/// sit within a few hundred bytes, so one read serves several of them (a read costs
/// ~17 ns whatever its size up to here).
struct StackWindow {
    words: Option<*mut [u64; WINDOW_WORDS]>,
    /// User address of `words[0]`; 0 when the window holds nothing.
    base: u64,
}

impl StackWindow {
    /// The frame record at `bp` (8-aligned): from the window, after moving the window
    /// to `bp` when it is outside, or with a read of its own when the window cannot be
    /// filled there (the end of the stack mapping is within the window's length).
    #[inline(always)]
    fn frame_at(&mut self, bp: u64) -> Option<FrameRecord> {
        let words = self.words?;
        let offset = bp.wrapping_sub(self.base);
        if self.base == 0 || offset > (WINDOW_WORDS as u64 - 2) * 8 {
            let filled = unsafe {
                bpf_probe_read_user_raw(
                    words.cast(),
                    (WINDOW_WORDS * 8) as u32,
                    bp as *const c_void,
                )
            };
            if filled != 0 {
                self.base = 0;
                return unsafe { bpf_probe_read_user(bp as *const FrameRecord) }.ok();
            }
            self.base = bp;
        }
        let i = (bp.wrapping_sub(self.base) / 8) as usize;
        if i > WINDOW_WORDS - 2 {
            return None;
        }
        let words = unsafe { &*words };
        Some(FrameRecord {
            caller_bp: words[i],
            return_address: words[i + 1],
        })
    }
}
