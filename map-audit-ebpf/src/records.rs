//! Sending records to the agent through the `EVENTS` ring buffer.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns},
};
use map_audit_common::{
    counters::{REGION_EVENTS, REGION_EVENTS_LOST_RINGBUF_FULL},
    records::{
        KIND_REGION_MAPPED, KIND_REGION_UNMAPPED, KIND_UNMAP_UNRESOLVED, RecordHeader, RegionRecord,
    },
    region::Region,
};

use crate::{counters::bump, maps::EVENTS};

/// Wake the agent once this much data waits; below it, fault records ride along
/// without a wake-up (the agent also drains on a timer).
const WAKEUP_THRESHOLD_BYTES: u64 = 256 * 1024;

/// Header for a record of `kind` about the current task.
#[inline(always)]
pub fn header(kind: u32) -> RecordHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    RecordHeader {
        kind,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        _pad: 0,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        comm: bpf_get_current_comm().unwrap_or_default(),
    }
}

/// Submit flags for a high-rate record: wake the agent only past the threshold.
#[inline(always)]
pub fn batched_wakeup_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA.into()) >= WAKEUP_THRESHOLD_BYTES {
        BPF_RB_FORCE_WAKEUP.into()
    } else {
        BPF_RB_NO_WAKEUP.into()
    }
}

/// Reports that `region` entered the table.
#[inline(always)]
pub fn region_mapped(region: &Region) {
    send_region(KIND_REGION_MAPPED, region, region.start, region.end);
}

/// Reports that `[range_start, range_end)` of `region` left the table.
#[inline(always)]
pub fn region_unmapped(region: &Region, range_start: u64, range_end: u64) {
    send_region(KIND_REGION_UNMAPPED, region, range_start, range_end);
}

/// Hands `[range_start, range_end)` to the agent: the kernel's walk may have missed
/// regions inside it.
#[inline(always)]
pub fn unmap_unresolved(range_start: u64, range_end: u64) {
    send_region(
        KIND_UNMAP_UNRESOLVED,
        &Region::default(),
        range_start,
        range_end,
    );
}

#[inline(always)]
fn send_region(kind: u32, region: &Region, range_start: u64, range_end: u64) {
    let record = RegionRecord {
        header: header(kind),
        region: *region,
        range_start,
        range_end,
    };
    bump(REGION_EVENTS);
    // Region records are rare and the agent resolves paths from /proc while the process
    // lives: wake it now.
    if EVENTS
        .output::<RegionRecord>(&record, BPF_RB_FORCE_WAKEUP.into())
        .is_err()
    {
        bump(REGION_EVENTS_LOST_RINGBUF_FULL);
    }
}
