//! Go mode's state: which goroutine is inside a write to which map. Two tables, both
//! keyed by process: `GO_WRITERS` (map -> the goroutine writing it, with its stack as
//! of its entry, so a later racer can report both) and `GO_GOROUTINES` (goroutine ->
//! the map it writes, so a return, where RBX no longer holds the map, finds it).

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user, generated},
    macros::map,
    maps::{HashMap, PerCpuArray},
    programs::ProbeContext,
};
use map_audit_common::{
    go_maps::{
        GoConfig, GoMapKey, GoWriter, GoroutineKey,
        counters::{GOID_UNREADABLE, STACKS_TRUNCATED},
    },
    unwind::STACK_END_DEPTH_LIMIT,
};

use crate::{
    counters,
    user_stack::{self, Frames, Tables, UserRegs},
};

#[map]
pub static GO_WRITERS: HashMap<GoMapKey, GoWriter> = HashMap::with_max_entries(8192, 0);

#[map]
pub static GO_GOROUTINES: HashMap<GoroutineKey, u64> = HashMap::with_max_entries(8192, 0);

/// Where the current goroutine's `GoWriter` is built (too large for the BPF stack).
/// Per CPU: uprobe programs do not nest on one CPU.
#[map]
pub static GO_WRITER_SCRATCH: PerCpuArray<GoWriter> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static GO_COUNTERS: PerCpuArray<u64> =
    PerCpuArray::with_max_entries(map_audit_common::go_maps::counters::COUNT, 0);

#[unsafe(no_mangle)]
static GO_CONFIG: GoConfig = GoConfig {
    tgid: 0,
    all_processes: 0,
    ttl_ns: 0,
};

/// The configuration as set by the agent (volatile: the loader rewrites the value).
#[inline(always)]
pub fn config() -> GoConfig {
    unsafe { core::ptr::read_volatile(&GO_CONFIG) }
}

#[inline(always)]
pub fn bump(index: u32) {
    if let Some(slot) = GO_COUNTERS.get_ptr_mut(index) {
        unsafe { counters::add_one(slot) };
    }
}

/// The current task in the audited process (any process with `--all-go`: the uprobes
/// are on the binaries found to be Go): (tgid, tid).
#[inline(always)]
pub fn audited_task() -> Option<(u32, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let config = config();
    (config.all_processes != 0 || tgid == config.tgid).then_some((tgid, pid_tgid as u32))
}

/// The uprobe's cookie (`map_audit_common::go_maps::uprobe_cookie`).
#[inline(always)]
fn cookie(ctx: &ProbeContext) -> u64 {
    unsafe { generated::bpf_get_attach_cookie(ctx.regs.cast()) }
}

#[inline(always)]
pub fn regs(ctx: &ProbeContext) -> &pt_regs {
    unsafe { &*ctx.regs }
}

/// The running goroutine's id: `runtime.g` is in R14 in Go's register ABI, and the
/// offset of `goid` in it is the cookie's high half.
#[inline(always)]
pub fn current_goid(ctx: &ProbeContext) -> Option<u64> {
    let at = regs(ctx).r14 + (cookie(ctx) >> 32);
    match unsafe { bpf_probe_read_user(at as *const u64) } {
        Ok(goid) => Some(goid),
        Err(_) => {
            bump(GOID_UNREADABLE);
            None
        }
    }
}

/// Fills the per-CPU scratch writer for the goroutine at a function's first
/// instruction: the return address at *RSP (frame-pointer walks skip it, as the callee
/// has not pushed RBP yet), then the caller's frame chain.
#[inline(always)]
pub fn capture_at_entry(ctx: &ProbeContext, goid: u64, tid: u32) -> Option<&'static mut GoWriter> {
    let regs = regs(ctx);
    let scratch = GO_WRITER_SCRATCH.get_ptr_mut(0)?;
    let writer = unsafe { &mut *scratch };
    writer.goid = goid;
    writer.tid = tid;
    writer.hook = cookie(ctx) as u32;
    writer.entry_ip = regs.rip;
    writer.start_ns = unsafe { bpf_ktime_get_ns() };
    writer.stack_truncated = 0;
    writer.stack_bytes = -14; // EFAULT until walked
    // An unreadable *RSP leaves the stack empty (an errno in `stack_bytes`), the write
    // still tracked.
    let Ok(caller) = (unsafe { bpf_probe_read_user(regs.rsp as *const u64) }) else {
        return Some(writer);
    };
    // At the function's entry: the caller's pc is the return address at RSP, its RSP
    // is above it, and RBP is still the caller's.
    let from = UserRegs::Known {
        ip: caller,
        sp: regs.rsp + 8,
        bp: regs.rbp,
        exact: false,
    };
    // The walk writes the frames through a pointer of its own: the `&mut` is taken
    // anew after it.
    let walked = user_stack::walk(from, Frames::GoWriter, Tables::None);
    let writer = unsafe { &mut *scratch };
    writer.stack_bytes = walked.bytes;
    if walked.end == STACK_END_DEPTH_LIMIT {
        writer.stack_truncated = 1;
        bump(STACKS_TRUNCATED);
    }
    Some(writer)
}

#[inline(always)]
pub fn goroutine_key(tgid: u32, goid: u64) -> GoroutineKey {
    GoroutineKey {
        tgid,
        _pad: 0,
        goid,
    }
}

#[inline(always)]
pub fn map_key(tgid: u32, map: u64) -> GoMapKey {
    GoMapKey { tgid, _pad: 0, map }
}

/// Closes the goroutine's open write, if any: returns (map, hook of the write).
#[inline(always)]
pub fn close_write(tgid: u32, goid: u64) -> Option<(u64, u32)> {
    let goroutine = goroutine_key(tgid, goid);
    let map = unsafe { *GO_GOROUTINES.get(&goroutine)? };
    let _ = GO_GOROUTINES.remove(&goroutine);
    let key = map_key(tgid, map);
    let mut hook = u32::MAX;
    if let Some(writer) = unsafe { GO_WRITERS.get(&key) }
        && writer.goid == goid
    {
        hook = writer.hook;
        let _ = GO_WRITERS.remove(&key);
    }
    Some((map, hook))
}
