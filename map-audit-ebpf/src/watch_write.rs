//! `map-audit watch`: the BPF program on the hardware watchpoints (perf
//! `PERF_TYPE_BREAKPOINT` events, one per watched address and thread). The debug
//! exception comes after the write, in user mode: the sample's registers are the
//! writer's, with the ip at the instruction after the write (the CFI row there is the
//! state the write left, so the walk starts from it as from a fault).

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user},
    macros::perf_event,
    programs::PerfEventContext,
};
use map_audit_common::{
    counters::{
        WATCH_HITS, WATCH_HITS_LOST_RINGBUF_FULL, WATCH_HITS_RATE_LIMITED, WATCH_KERNEL_WRITES,
    },
    records::{KIND_WATCH_WRITE, WATCH_VALUE_UNREAD, WatchRecord},
};

use crate::{
    counters::bump,
    maps::{EVENTS, WATCH_SCRATCH},
    rate_limit, records, scope,
    user_stack::{self, Frames, Tables, UserRegs},
    write_fault::walk_result,
};

#[perf_event]
pub fn watch_write(ctx: PerfEventContext) -> u32 {
    let data = unsafe { &*ctx.ctx };
    // A write the kernel made (copy_to_user): its registers are the kernel's.
    if data.regs.rip >> 63 != 0 {
        bump(WATCH_KERNEL_WRITES);
        return 0;
    }
    bump(WATCH_HITS);
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !rate_limit::admit_counted(tgid, WATCH_HITS_RATE_LIMITED) {
        return 0;
    }
    let Some(record) = WATCH_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    let address = data.addr;
    let regs = UserRegs::Known {
        ip: data.regs.rip,
        sp: data.regs.rsp,
        bp: data.regs.rbp,
        exact: true,
    };
    // The process's unwind tables when it is in scope (it is, unless it exec'd away).
    let tables = match scope::get(tgid) {
        Some(entry) => Tables::Of {
            tgid,
            generation: entry.generation,
        },
        None => Tables::None,
    };
    let walked = user_stack::walk(regs, Frames::Watch, tables);
    let record = unsafe { &mut *record };
    (record.stack_bytes, record.stack_end) = walk_result(walked);
    record.header = records::header(KIND_WATCH_WRITE);
    record.address = address;
    match unsafe { bpf_probe_read_user(address as *const u64) } {
        Ok(value) => {
            record.value = value;
            record.flags = 0;
        }
        Err(_) => {
            record.value = 0;
            record.flags = WATCH_VALUE_UNREAD;
        }
    }
    let len = WatchRecord::wire_len(record.stack_bytes);
    let bytes =
        unsafe { core::slice::from_raw_parts((record as *const WatchRecord).cast::<u8>(), len) };
    if EVENTS
        .output::<[u8]>(bytes, records::batched_wakeup_flags(len as u64))
        .is_err()
    {
        bump(WATCH_HITS_LOST_RINGBUF_FULL);
    }
    0
}
