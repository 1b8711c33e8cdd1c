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
        generated::bpf_probe_read_user as bpf_probe_read_user_raw,
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
/// the registers cannot be read.
#[inline(always)]
pub fn walk(regs: UserRegs, frames: &mut [u64; MAX_STACK_DEPTH]) -> Option<Walked> {
    let (ip, mut bp) = regs.read()?;
    frames[0] = ip;
    let mut hash = stack_hash_step(STACK_HASH_SEED, ip);
    let mut depth = 1;
    let mut window = StackWindow::new();
    let walked = |depth: usize, truncated, hash| {
        Some(Walked {
            bytes: depth as i64 * 8,
            truncated,
            hash,
        })
    };
    while depth < MAX_STACK_DEPTH {
        if bp == 0 || bp & 7 != 0 {
            return walked(depth, false, hash);
        }
        let Some(frame) = window.frame_at(bp) else {
            return walked(depth, false, hash);
        };
        frames[depth] = frame.return_address;
        hash = stack_hash_step(hash, frame.return_address);
        depth += 1;
        // Callers' frames sit at higher addresses; anything else is not a frame chain.
        bp = if frame.caller_bp > bp {
            frame.caller_bp
        } else {
            0
        };
    }
    walked(depth, bp != 0, hash)
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
    #[inline(always)]
    fn new() -> Self {
        Self {
            words: STACK_WINDOW.get_ptr_mut(0),
            base: 0,
        }
    }

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
