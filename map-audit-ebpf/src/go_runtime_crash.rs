//! Go mode's crash hooks: `runtime.fatal` (`runtime.throw` before Go 1.19), the way the
//! runtime reports "concurrent map writes", and `runtime.gopanic`. A panic unwinds
//! past the write's return instructions, so it closes the goroutine's open write; a
//! crash record ties the crash to the map write it happened in.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_user_buf},
    macros::uprobe,
    programs::ProbeContext,
};
use map_audit_common::go_maps::{
    CRASH_FATAL, CRASH_MESSAGE_LEN, CRASH_PANIC, GoCrashRecord, KIND_GO_CRASH,
    counters::{CRASHES, CRASHES_LOST_RINGBUF_FULL, WRITES_CLOSED_BY_PANIC},
};

use crate::{
    go_writers::{self, audited_task, bump, capture_at_entry, close_write, current_goid},
    maps::EVENTS,
    records,
};

/// `runtime.fatal(s string)` / `runtime.throw(s string)`: the message in RAX (pointer)
/// and RBX (length).
#[uprobe]
pub fn go_runtime_fatal(ctx: ProbeContext) -> u32 {
    report(&ctx, CRASH_FATAL);
    0
}

/// `runtime.gopanic(e any)`: reported only when it ends an open map write.
#[uprobe]
pub fn go_runtime_panic(ctx: ProbeContext) -> u32 {
    report(&ctx, CRASH_PANIC);
    0
}

#[inline(always)]
fn report(ctx: &ProbeContext, crash: u32) {
    let Some((tgid, tid)) = audited_task() else {
        return;
    };
    let regs = go_writers::regs(ctx);
    let Some(goid) = current_goid(regs) else {
        return;
    };
    let open = close_write(tgid, goid);
    if crash == CRASH_PANIC {
        if open.is_none() {
            return; // an ordinary panic: not ours to report
        }
        bump(WRITES_CLOSED_BY_PANIC);
    }
    let (message_ptr, message_len) = (regs.rax, regs.rbx);
    let Some(writer) = capture_at_entry(ctx, goid, tid) else {
        return;
    };
    bump(CRASHES);
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
        if crash == CRASH_FATAL {
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
        }
        core::ptr::copy_nonoverlapping(writer, &raw mut (*record).writer, 1);
    }
    entry.submit(BPF_RB_FORCE_WAKEUP.into());
}
