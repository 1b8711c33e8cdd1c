//! Walks a stopped Go thread's stack the way the runtime's own traceback does: the
//! frame size of each function at its pc comes from `.gopclntab`'s pcsp table, and the
//! return address sits just above the frame. Exact without frame pointers and in
//! frameless functions; code outside the Go binary (the vDSO, cgo's C) falls back to
//! the frame-pointer chain. Also finds which goroutine a thread runs.

use super::pclntab::FunctionTable;

/// Frames kept per thread; a deeper stack is cut and marked truncated.
pub const MAX_FRAMES: usize = 64;

/// Where goroutine and thread stacks start (`goexit`, `mstart`, `rt0_go`, `clone`), or
/// switch to another (`mcall`, `morestack`, `systemstack`: the frame above is on the
/// goroutine's stack, which the runtime's own traceback does not follow either), or a
/// signal handler's entry (the interrupted registers are in the signal frame): the
/// walk ends there, complete.
pub const STACK_ENDS: [&str; 10] = [
    "runtime.goexit",
    "runtime.mstart",
    "runtime.mstart0",
    "runtime.rt0_go",
    "runtime.clone",
    "runtime.mcall",
    "runtime.morestack",
    "runtime.systemstack",
    "runtime.sigtramp",
    "runtime.cgoSigtramp",
];

/// A thread's registers the walk starts from.
#[derive(Debug, Clone, Copy)]
pub struct Registers {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Walk {
    /// The thread's pc, then return addresses, innermost first (runtime addresses).
    pub addrs: Vec<u64>,
    pub truncated: bool,
}

/// `read` reads 8 bytes of the stopped process; `load_bias` is its runtime address
/// minus link address.
pub fn walk(
    functions: &FunctionTable,
    load_bias: u64,
    from: Registers,
    read: impl Fn(u64) -> Option<u64>,
) -> Walk {
    let Registers {
        ip: mut pc,
        mut sp,
        mut bp,
    } = from;
    let mut addrs = vec![pc];
    while addrs.len() < MAX_FRAMES {
        // A return address follows its call: the call's own pc is one byte back.
        let at = if addrs.len() == 1 { pc } else { pc - 1 };
        let (return_address, caller_sp, caller_bp) = match functions.at(at.wrapping_sub(load_bias))
        {
            Some(f) if STACK_ENDS.contains(&f.name.as_str()) => break,
            Some(f) => {
                let Some(size) = functions.frame_size(f, at.wrapping_sub(load_bias)) else {
                    break;
                };
                let slot = sp + size;
                let Some(return_address) = read(slot) else {
                    break;
                };
                // A frame that has one keeps the caller's RBP just below the return
                // address (only code outside Go needs it).
                let caller_bp = if size > 0 {
                    read(slot - 8).unwrap_or(bp)
                } else {
                    bp
                };
                (return_address, slot + 8, caller_bp)
            }
            None => {
                if bp < sp {
                    break;
                }
                let (Some(return_address), Some(saved)) = (read(bp + 8), read(bp)) else {
                    break;
                };
                (return_address, bp + 16, saved)
            }
        };
        // Past Go code, an address in no function is not a return address.
        if return_address == 0
            || functions
                .at((return_address - 1).wrapping_sub(load_bias))
                .is_none()
        {
            break;
        }
        addrs.push(return_address);
        (pc, sp, bp) = (return_address, caller_sp, caller_bp);
    }
    let truncated = addrs.len() == MAX_FRAMES;
    Walk { addrs, truncated }
}

/// The id of the goroutine a thread runs, 0 on its system stack (`g0`), `None` when
/// no candidate `g` holds the thread's RSP. Candidates: R14 (Go's register ABI keeps
/// `g` there) and the TLS slot at FS-8 (internal linking on linux/amd64).
pub fn goroutine(
    r14: u64,
    fs_base: u64,
    sp: u64,
    goid_offset: u32,
    read: impl Fn(u64) -> Option<u64>,
) -> Option<u64> {
    let tls = fs_base.checked_sub(8).and_then(&read);
    [Some(r14), tls].into_iter().flatten().find_map(|g| {
        // `g` starts with its stack bounds, [lo, hi).
        let (lo, hi) = (read(g)?, read(g + 8)?);
        (g != 0 && lo <= sp && sp < hi).then(|| read(g + u64::from(goid_offset)))?
    })
}
