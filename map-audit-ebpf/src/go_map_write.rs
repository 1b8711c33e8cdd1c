//! Go mode's map-write hooks: uprobes on the entry and on every return instruction of
//! `runtime.mapassign*`, `mapdelete*` and `mapclear` (never uretprobes: they rewrite
//! the return address on the goroutine stack, which Go moves, and crash the program).
//! A goroutine entering a write to a map another goroutine is still writing is a race:
//! both are sent, each with its stack as of its own entry.

use aya_ebpf::{
    bindings::{BPF_NOEXIST, BPF_RB_FORCE_WAKEUP},
    helpers::bpf_ktime_get_ns,
    macros::uprobe,
    programs::ProbeContext,
};
use map_audit_common::go_maps::{
    GoRaceRecord, KIND_GO_MAP_RACE,
    counters::{
        RACES, RACES_LOST_RINGBUF_FULL, REENTRIES, WRITER_TABLE_FULL, WRITERS_EXPIRED,
        WRITES_ENTERED, WRITES_RETURNED,
    },
};

use crate::{
    go_writers::{
        self, GO_GOROUTINES, GO_WRITERS, audited_task, bump, capture_at_entry, close_write,
        current_goid, goroutine_key, map_key,
    },
    maps::EVENTS,
    records,
};

/// First instruction of a map write: RBX holds the map, R14 the goroutine.
#[uprobe]
pub fn go_map_write_entry(ctx: ProbeContext) -> u32 {
    let Some((tgid, tid)) = audited_task() else {
        return 0;
    };
    bump(WRITES_ENTERED);
    let regs = go_writers::regs(&ctx);
    let map = regs.rbx;
    let Some(goid) = current_goid(&ctx) else {
        return 0;
    };
    let Some(current) = capture_at_entry(&ctx, goid, tid) else {
        return 0;
    };
    let key = map_key(tgid, map);
    let mut holder = GO_WRITERS.get_ptr_mut(&key);
    if holder.is_none() {
        // NOEXIST: of two goroutines entering at once on two CPUs, the second to insert
        // finds the first here.
        if GO_WRITERS
            .insert(&key, &*current, BPF_NOEXIST.into())
            .is_ok()
        {
            remember_goroutine(tgid, goid, map);
            return 0;
        }
        holder = GO_WRITERS.get_ptr_mut(&key);
    }
    let Some(holder) = holder else {
        bump(WRITER_TABLE_FULL);
        return 0;
    };
    let holder = unsafe { &mut *holder };
    if holder.goid == goid {
        // The same goroutine again: stack growth restarts the function at entry.
        bump(REENTRIES);
        return 0;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    if now.saturating_sub(holder.start_ns) >= go_writers::config().ttl_ns {
        bump(WRITERS_EXPIRED);
        if GO_WRITERS.insert(&key, &*current, 0).is_err() {
            bump(WRITER_TABLE_FULL);
            return 0;
        }
        remember_goroutine(tgid, goid, map);
        return 0;
    }
    bump(RACES);
    match EVENTS.reserve::<GoRaceRecord>(0) {
        Some(mut entry) => {
            let record = entry.as_mut_ptr();
            unsafe {
                (*record).header = records::header_at(KIND_GO_MAP_RACE, now);
                (*record).map = map;
                core::ptr::copy_nonoverlapping(holder, &raw mut (*record).holder, 1);
                core::ptr::copy_nonoverlapping(current, &raw mut (*record).current, 1);
            }
            entry.submit(BPF_RB_FORCE_WAKEUP.into());
        }
        None => bump(RACES_LOST_RINGBUF_FULL),
    }
    // The holder keeps the map: its return closes it.
    remember_goroutine(tgid, goid, map);
    0
}

#[inline(always)]
fn remember_goroutine(tgid: u32, goid: u64, map: u64) {
    if GO_GOROUTINES
        .insert(&goroutine_key(tgid, goid), &map, 0)
        .is_err()
    {
        bump(WRITER_TABLE_FULL);
    }
}

/// A return instruction of a map write: closes the goroutine's open write.
#[uprobe]
pub fn go_map_write_return(ctx: ProbeContext) -> u32 {
    let Some((tgid, _)) = audited_task() else {
        return 0;
    };
    let Some(goid) = current_goid(&ctx) else {
        return 0;
    };
    if close_write(tgid, goid).is_some() {
        bump(WRITES_RETURNED);
    }
    0
}
