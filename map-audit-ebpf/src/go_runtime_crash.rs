//! Go mode's crash hooks: `runtime.fatal` (`runtime.throw` before Go 1.19), the way the
//! runtime reports "concurrent map writes", and `runtime.gopanic`. A panic unwinds
//! past the write's return instructions, so it closes the goroutine's open write; a
//! crash record ties the crash to the map write it happened in. `--crash-only` hooks
//! `fatal`, `throw` and `fatalpanic` alone and stops the process (SIGSTOP) so the agent
//! can read every thread before the runtime exits.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user, bpf_probe_read_user_buf, generated},
    macros::uprobe,
    programs::ProbeContext,
};
use map_audit_common::go_maps::{
    CRASH_FATAL, CRASH_FATAL_PANIC, CRASH_MESSAGE_LEN, CRASH_PANIC, GoCrashRecord, KIND_GO_CRASH,
    counters::{
        CRASH_STOPS, CRASH_STOPS_FAILED, CRASHES, CRASHES_LOST_RINGBUF_FULL, WRITES_CLOSED_BY_PANIC,
    },
};

use crate::{
    go_writers::{self, audited_task, bump, capture_at_entry, close_write, current_goid},
    maps::EVENTS,
    records,
};

const SIGSTOP: u32 = 19;
/// `abi.Type.Kind_`'s offset (after size, ptrdata, hash, tflag, align, fieldAlign; Go
/// 1.17-1.27), its mask, and the kind of a string.
const TYPE_KIND_OFFSET: u64 = 23;
const KIND_MASK: u8 = 0x1f;
const KIND_STRING: u8 = 24;

/// `runtime.fatal(s string)` / `runtime.throw(s string)`: the message in RAX (pointer)
/// and RBX (length).
#[uprobe]
pub fn go_runtime_fatal(ctx: ProbeContext) -> u32 {
    report(&ctx, CRASH_FATAL, false);
    0
}

/// `runtime.gopanic(e any)`: reported only when it ends an open map write.
#[uprobe]
pub fn go_runtime_panic(ctx: ProbeContext) -> u32 {
    report(&ctx, CRASH_PANIC, false);
    0
}

/// `--crash-only`'s `runtime.fatal` / `runtime.throw`.
#[uprobe]
pub fn go_runtime_fatal_stop(ctx: ProbeContext) -> u32 {
    report(&ctx, CRASH_FATAL, true);
    0
}

/// `--crash-only`'s `runtime.fatalpanic(msgs *_panic)`: no one recovered the panic.
#[uprobe]
pub fn go_runtime_fatal_panic_stop(ctx: ProbeContext) -> u32 {
    report(&ctx, CRASH_FATAL_PANIC, true);
    0
}

/// The panic's value when it is a string (`preprintpanics` has already turned errors
/// and Stringers into one): (pointer, length), or (0, 0).
#[inline(always)]
fn panic_string(panic: u64) -> (u64, u64) {
    // `_panic` starts with argp, then `arg any` as (type, data).
    let read = |at: u64| unsafe { bpf_probe_read_user(at as *const u64) }.ok();
    let (Some(arg_type), Some(data)) = (read(panic + 8), read(panic + 16)) else {
        return (0, 0);
    };
    let kind = unsafe { bpf_probe_read_user((arg_type + TYPE_KIND_OFFSET) as *const u8) };
    if kind.map(|k| k & KIND_MASK) != Ok(KIND_STRING) {
        return (0, 0);
    }
    match (read(data), read(data + 8)) {
        (Some(ptr), Some(len)) => (ptr, len),
        _ => (0, 0),
    }
}

#[inline(always)]
fn report(ctx: &ProbeContext, crash: u32, stop: bool) {
    let Some((tgid, tid)) = audited_task() else {
        return;
    };
    let regs = go_writers::regs(ctx);
    let Some(goid) = current_goid(ctx) else {
        return;
    };
    let open = close_write(tgid, goid);
    if crash == CRASH_PANIC {
        if open.is_none() {
            return; // an ordinary panic: not ours to report
        }
        bump(WRITES_CLOSED_BY_PANIC);
    }
    let (message_ptr, message_len) = match crash {
        CRASH_FATAL => (regs.rax, regs.rbx),
        CRASH_FATAL_PANIC => panic_string(regs.rax),
        _ => (0, 0),
    };
    let Some(writer) = capture_at_entry(ctx, goid, tid) else {
        return;
    };
    bump(CRASHES);
    // Reserved before the stop: a process is never stopped without a record telling the
    // agent to resume it.
    let Some(mut entry) = EVENTS.reserve::<GoCrashRecord>(0) else {
        bump(CRASHES_LOST_RINGBUF_FULL);
        return;
    };
    let record = entry.as_mut_ptr();
    unsafe {
        (*record).header = records::header_at(KIND_GO_CRASH, bpf_ktime_get_ns());
        (*record).crash = crash;
        // Through black_box: LLVM otherwise spills an unset register for the `None`
        // case and masks it later, which the verifier rejects (`R8 !read_ok`).
        let (map, hook) = core::hint::black_box(open.unwrap_or((0, u32::MAX)));
        (*record).map = map;
        (*record).map_hook = hook;
        (*record).in_map_write = u32::from(open.is_some());
        (*record).message = [0; CRASH_MESSAGE_LEN];
        (*record).message_len = 0;
        let len = (message_len as usize).min(CRASH_MESSAGE_LEN);
        if len > 0
            && bpf_probe_read_user_buf(
                message_ptr as *const u8,
                &mut (&mut (*record).message)[..len],
            )
            .is_ok()
        {
            (*record).message_len = len as u32;
        }
        core::ptr::copy_nonoverlapping(writer, &raw mut (*record).writer, 1);
        (*record).stopped = 0;
        (*record)._pad = 0;
        if stop {
            if generated::bpf_send_signal(SIGSTOP) == 0 {
                (*record).stopped = 1;
                bump(CRASH_STOPS);
            } else {
                bump(CRASH_STOPS_FAILED);
            }
        }
    }
    entry.submit(BPF_RB_FORCE_WAKEUP.into());
}
