//! Sending records to the agent through the `EVENTS` ring buffer.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_ktime_get_ns, generated as raw,
    },
};
use map_audit_common::{
    COMM_LEN, PAGE_SIZE,
    counters::{
        PAGES_DIRTIED, PAGES_DIRTIED_LOST_RINGBUF_FULL, PROCESS_RECORDS,
        PROCESS_RECORDS_LOST_RINGBUF_FULL, REGION_EVENTS, REGION_EVENTS_LOST_RINGBUF_FULL,
    },
    records::{
        DirtyPageRecord, KIND_PAGE_DIRTIED, KIND_REGION_MAPPED, KIND_REMAP_UNRESOLVED,
        ProcessRecord, RecordHeader, RegionRecord,
    },
    region::Region,
};

use crate::{
    counters::bump,
    maps::{EVENTS, RINGBUF_HIGH_WATER},
};

/// Wake the agent once this much data waits; below it, fault records ride along
/// without a wake-up (the agent also drains on a timer).
const WAKEUP_THRESHOLD_BYTES: u64 = 256 * 1024;

/// Header for a record of `kind` about the current task.
#[inline(always)]
pub fn header(kind: u32) -> RecordHeader {
    header_at(kind, unsafe { bpf_ktime_get_ns() })
}

/// `header` for a caller that has already read the clock.
#[inline(always)]
pub fn header_at(kind: u32, ts_ns: u64) -> RecordHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    RecordHeader {
        kind,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        _pad: 0,
        ts_ns,
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or_default(),
    }
}

/// Submit flags for a high-rate record of `len` bytes: wake the agent only when this
/// record takes the waiting data past the threshold. Waking on every record above it
/// (until the agent catches up) cost an interrupt per record: ~500 ns each in
/// every-event mode. The agent drains everything once woken, and on a timer.
#[inline(always)]
pub fn batched_wakeup_flags(len: u64) -> u64 {
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA.into());
    note_fill(waiting + len);
    if waiting < WAKEUP_THRESHOLD_BYTES && waiting + len >= WAKEUP_THRESHOLD_BYTES {
        BPF_RB_FORCE_WAKEUP.into()
    } else {
        BPF_RB_NO_WAKEUP.into()
    }
}

/// Raises the ring buffer's high-water mark to `filled` bytes (racy across CPUs: a
/// mark for the agent's metrics, not an account).
#[inline(always)]
pub fn note_fill(filled: u64) {
    if let Some(high) = RINGBUF_HIGH_WATER.get_ptr_mut(0)
        && unsafe { *high } < filled
    {
        unsafe { *high = filled };
    }
}

/// Reports a write fault at `address` on a page of the shared file mapping `region`:
/// the page is dirty until written back (msync, or the kernel's writeback).
/// A function of its own, its record written in place, calling no other function:
/// inlined, its locals pushed the perf-event fault program past 6.1's 512-byte stack
/// (with the walk's callback); 6.1 counts each frame of a call chain rounded up to 32.
#[inline(never)]
pub fn page_dirtied(region: &Region, address: u64) {
    bump(PAGES_DIRTIED);
    let Some(mut entry) = EVENTS.reserve::<DirtyPageRecord>(0) else {
        bump(PAGES_DIRTIED_LOST_RINGBUF_FULL);
        return;
    };
    let record = unsafe { &mut *entry.as_mut_ptr() };
    let pid_tgid = bpf_get_current_pid_tgid();
    record.header.kind = KIND_PAGE_DIRTIED;
    record.header.tgid = (pid_tgid >> 32) as u32;
    record.header.tid = pid_tgid as u32;
    record.header._pad = 0;
    record.header.ts_ns = unsafe { bpf_ktime_get_ns() };
    record.header.cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    // Straight into the record (zeroed on failure): a copy would call memmove, a third
    // frame on the stack.
    let comm = record.header.comm.as_mut_ptr();
    unsafe { raw::bpf_get_current_comm(comm.cast(), COMM_LEN as u32) };
    record.region_id = region.id;
    record.file_page = (address - region.start + region.file_offset) / PAGE_SIZE;
    record.address = address;
    entry.submit(batched_wakeup_flags(size_of::<DirtyPageRecord>() as u64));
}

/// Reports that `region` entered the table; `origin` is an `ORIGIN_*` value.
#[inline(always)]
pub fn region_mapped(region: &Region, origin: u32) {
    region_change(KIND_REGION_MAPPED, region, region.start, region.end, origin);
}

/// Reports a change of `[range_start, range_end)` of `region` (`detail`: the new prot
/// for an mprotect).
#[inline(always)]
pub fn region_change(kind: u32, region: &Region, range_start: u64, range_end: u64, detail: u32) {
    region_record(kind, region, range_start, range_end, detail, 0);
}

#[inline(always)]
fn region_record(
    kind: u32,
    region: &Region,
    range_start: u64,
    range_end: u64,
    detail: u32,
    seq: u64,
) {
    bump(REGION_EVENTS);
    note_fill(EVENTS.query(BPF_RB_AVAIL_DATA.into()) + size_of::<RegionRecord>() as u64);
    // Written in place, not built on the stack: the table walks that call this run
    // inside `bpf_loop` callbacks, and older kernels (6.1) cap the whole call chain's
    // stack at 512 bytes.
    let Some(mut entry) = EVENTS.reserve::<RegionRecord>(0) else {
        bump(REGION_EVENTS_LOST_RINGBUF_FULL);
        return;
    };
    let record = unsafe { &mut *entry.as_mut_ptr() };
    record.header = header(kind);
    record.region = *region;
    record.range_start = range_start;
    record.range_end = range_end;
    record.detail = detail;
    record._pad = 0;
    record.seq = seq;
    // Region records are rare and the agent reads /proc for them while the process
    // lives: wake it now.
    entry.submit(BPF_RB_FORCE_WAKEUP.into());
}

/// Hands `[range_start, range_end)` to the agent: the kernel's walk may have missed
/// regions inside it. `seq`: the call's `PendingCall::seq`.
#[inline(always)]
pub fn range_unresolved(kind: u32, range_start: u64, range_end: u64, detail: u32, seq: u64) {
    region_record(
        kind,
        &Region::default(),
        range_start,
        range_end,
        detail,
        seq,
    );
}

/// An mremap of `[old_start, old_end)`, a range the kernel's table does not hold, to
/// `[new_start, new_end)`: the agent moves what its copy holds there.
#[inline(always)]
pub fn remap_unresolved(
    old_start: u64,
    old_end: u64,
    new_start: u64,
    new_end: u64,
    flags: u32,
    seq: u64,
) {
    let moved = Region {
        start: new_start,
        end: new_end,
        ..Region::default()
    };
    region_record(
        KIND_REMAP_UNRESOLVED,
        &moved,
        old_start,
        old_end,
        flags,
        seq,
    );
}

/// Reports a fork (`tgid`: the child), an exec or an exit.
#[inline(always)]
pub fn process(kind: u32, tgid: u32, generation: u32) {
    bump(PROCESS_RECORDS);
    let record = ProcessRecord {
        header: header(kind),
        tgid,
        generation,
    };
    if EVENTS
        .output::<ProcessRecord>(&record, BPF_RB_FORCE_WAKEUP.into())
        .is_err()
    {
        bump(PROCESS_RECORDS_LOST_RINGBUF_FULL);
    }
}
