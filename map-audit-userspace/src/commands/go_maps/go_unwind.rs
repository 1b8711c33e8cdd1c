//! Walks a stopped Go thread's stack the way the runtime's own traceback does: the
//! frame size of each function at its pc comes from `.gopclntab`'s pcsp table, and the
//! return address sits just above the frame. Exact without frame pointers and in
//! frameless functions; code outside the Go binary (the vDSO, cgo's C) falls back to
//! the frame-pointer chain. Also finds which goroutine a thread runs.

use super::{pclntab::FunctionTable, stack_switch::SwitchLayout};

/// Frames kept per thread; a deeper stack is cut and marked truncated (48 frames keep
/// a `go_crash_thread` line under 16 KiB).
pub const MAX_FRAMES: usize = 48;

/// Where goroutine and thread stacks start (`goexit`, `mstart`, `rt0_go`, `clone`), or
/// switch to another (`mcall`, `morestack`, `systemstack`: followed into the goroutine
/// that switched when the thread is on `g0` and the layout is known, see `Switch`), or
/// a signal handler's entry (the interrupted registers are in the signal frame): the
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
    /// It stopped before the stack's end: at C code (no `.gopclntab` entry), an
    /// unreadable slot, or `MAX_FRAMES`.
    pub truncated: bool,
}

/// A thread on `g0` whose walk may follow the switch at `systemstack` or `mcall` into
/// the goroutine that switched.
pub struct Switch<'a> {
    /// The thread's `g` (its `g0`).
    pub g0: u64,
    pub layout: &'a SwitchLayout,
}

/// `read` reads 8 bytes of the stopped process; `load_bias` is its runtime address
/// minus link address.
pub fn walk(
    functions: &FunctionTable,
    load_bias: u64,
    from: Registers,
    mut switch: Option<Switch>,
    read: impl Fn(u64) -> Option<u64>,
) -> Walk {
    let Registers {
        ip: mut pc,
        mut sp,
        mut bp,
    } = from;
    let mut addrs = vec![pc];
    // The thread's own pc, and a pc a switch saved, are exact; the rest return
    // addresses.
    let mut exact = true;
    // Reached where the runtime's traceback ends (else the walk is cut: C code, an
    // unreadable stack, the frame limit).
    let mut ended = false;
    while addrs.len() < MAX_FRAMES {
        // A return address follows its call: the call's own pc is one byte back.
        let at = if exact { pc } else { pc - 1 };
        exact = false;
        let (return_address, caller_sp, caller_bp) = match functions.at(at.wrapping_sub(load_bias))
        {
            Some(f) if SWITCHES.contains(&f.name.as_str()) && switch.is_some() => {
                let Some(saved) = switch.take().and_then(|s| switched_from(&s, &read)) else {
                    break;
                };
                // `systemstack` saved a pc inside `systemstack_switch`; `mcall` and
                // `morestack` a return address into the function that called them.
                exact = f.name == "runtime.systemstack";
                (pc, sp, bp) = (saved.ip, saved.sp, saved.bp);
                addrs.push(pc);
                continue;
            }
            Some(f) if STACK_ENDS.contains(&f.name.as_str()) => {
                ended = true;
                break;
            }
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
        if return_address == 0 {
            ended = true;
            break;
        }
        if functions
            .at((return_address - 1).wrapping_sub(load_bias))
            .is_none()
        {
            break;
        }
        addrs.push(return_address);
        (pc, sp, bp) = (return_address, caller_sp, caller_bp);
    }
    // The outermost frame may be a stack end the loop left by another way (`mcall`
    // on a thread with no goroutine to switch back to).
    let outermost = |at: u64| {
        functions
            .at(at.wrapping_sub(load_bias))
            .is_some_and(|f| STACK_ENDS.contains(&f.name.as_str()))
    };
    ended |= outermost(pc) || outermost(pc.wrapping_sub(1));
    Walk {
        addrs,
        truncated: !ended,
    }
}

/// Where a thread on its system stack switches from a goroutine's stack.
const SWITCHES: [&str; 3] = ["runtime.systemstack", "runtime.mcall", "runtime.morestack"];

/// The registers `m.curg` switched at, when the thread's `m` runs a goroutine.
fn switched_from(switch: &Switch, read: impl Fn(u64) -> Option<u64>) -> Option<Registers> {
    let layout = switch.layout;
    let m = read(switch.g0 + u64::from(layout.g_m))?;
    let curg = read(m + u64::from(layout.m_curg))?;
    if curg == 0 || curg == switch.g0 {
        return None;
    }
    let sched = curg + u64::from(layout.g_sched);
    Some(Registers {
        ip: read(sched + u64::from(layout.gobuf_pc))?,
        sp: read(sched + u64::from(layout.gobuf_sp))?,
        bp: read(sched + u64::from(layout.gobuf_bp))?,
    })
}

/// The `g` a thread runs and its goroutine id (0 on its system stack, `g0`); `None`
/// when no candidate `g` holds the thread's RSP. Candidates: R14 (Go's register ABI
/// keeps `g` there) and the TLS slot at FS-8 (internal linking on linux/amd64).
pub fn goroutine(
    r14: u64,
    fs_base: u64,
    sp: u64,
    goid_offset: u32,
    read: impl Fn(u64) -> Option<u64>,
) -> Option<(u64, u64)> {
    let tls = fs_base.checked_sub(8).and_then(&read);
    [Some(r14), tls].into_iter().flatten().find_map(|g| {
        // `g` starts with its stack bounds, [lo, hi).
        let (lo, hi) = (read(g)?, read(g + 8)?);
        (g != 0 && lo <= sp && sp < hi).then(|| Some((g, read(g + u64::from(goid_offset))?)))?
    })
}
