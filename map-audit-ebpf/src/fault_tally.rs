//! Kernel-side aggregation (default mode; see `map_audit_common::tally`): a fault whose
//! tally exists is counted here and costs no record, except the first of each flush
//! interval, which goes as a record and then starts the tally's new interval.

use aya_ebpf::bindings::BPF_NOEXIST;
use map_audit_common::{
    PAGE_SIZE,
    counters::FAULT_AGGREGATES_FULL,
    tally::{Tally, TallyKey},
};

use crate::{
    counters::{add_one, bump},
    maps::{FAULT_TALLIES, TALLY_EPOCH},
};

const EEXIST: i64 = 17;

/// Counts the fault in its tally if there is one in this flush interval; `false` when
/// the fault must go as a record (which then opens the tally or starts its interval,
/// see `open`).
#[inline(always)]
pub fn count(key: &TallyKey, address: u64, now: u64) -> bool {
    let Some(tally) = FAULT_TALLIES.get_ptr_mut(key) else {
        return false;
    };
    let tally = unsafe { &mut *tally };
    if tally.epoch != epoch() {
        return false;
    }
    let page = address / PAGE_SIZE;
    // Concurrent faults of one tally (threads on other CPUs) may interleave the plain
    // stores below; `count` is atomic so the total stays exact.
    unsafe { add_one(&mut tally.count) };
    if tally.last_page != page {
        tally.last_page = page;
        unsafe { add_one(&mut tally.pages) };
    }
    // Stamps may be a tick early (`tick_clock`): the latest stays.
    if now > tally.last_ts_ns {
        tally.last_ts_ns = now;
    }
    true
}

/// After a fault went as a record stamped with interval `epoch`: opens its tally, or
/// starts the tally's new flush interval, keeping where the previous one ended
/// (`Tally::epoch_start_*`). Racing CPUs may both send a record; each is one fault the
/// agent counts. A tally never goes back to an older interval.
#[inline(always)]
pub fn open(key: &TallyKey, address: u64, now: u64, epoch: u64) {
    if let Some(tally) = FAULT_TALLIES.get_ptr_mut(key) {
        let tally = unsafe { &mut *tally };
        if tally.epoch < epoch {
            tally.epoch_start_count = tally.count;
            tally.epoch_start_pages = tally.pages;
            tally.epoch_start_last_ts_ns = tally.last_ts_ns;
            tally.last_page = address / PAGE_SIZE;
            tally.last_ts_ns = now;
            // Last: faults on other CPUs count in the tally once they see the epoch.
            unsafe { core::ptr::write_volatile(&mut tally.epoch, epoch) };
        }
        return;
    }
    let tally = Tally {
        last_page: address / PAGE_SIZE,
        last_ts_ns: now,
        epoch,
        ..Tally::default()
    };
    match FAULT_TALLIES.insert(key, &tally, BPF_NOEXIST.into()) {
        Ok(()) => {}
        Err(err) if i64::from(err) == -EEXIST => {}
        // Later faults of this key keep coming as records.
        Err(_) => bump(FAULT_AGGREGATES_FULL),
    }
}

/// The agent's flush interval number, bumped at each flush.
#[inline(always)]
pub fn epoch() -> u64 {
    TALLY_EPOCH.get(0).copied().unwrap_or(0)
}
