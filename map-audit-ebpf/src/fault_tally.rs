//! Kernel-side aggregation (default mode; see `map_audit_common::tally`): a fault whose
//! tally exists is counted here and costs no record.

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

/// Counts the fault in its tally if there is one; `false` when the fault must go as a
/// record (which then opens the tally, see `open`).
#[inline(always)]
pub fn count(key: &TallyKey, address: u64, now: u64) -> bool {
    let Some(tally) = FAULT_TALLIES.get_ptr_mut(key) else {
        return false;
    };
    let tally = unsafe { &mut *tally };
    let epoch = epoch();
    let page = address / PAGE_SIZE;
    // Concurrent faults of one tally (threads on other CPUs) may interleave the plain
    // stores below; `count` is atomic so the total stays exact.
    unsafe { add_one(&mut tally.count) };
    if tally.last_page != page {
        tally.last_page = page;
        unsafe { add_one(&mut tally.pages) };
    }
    if tally.epoch != epoch {
        tally.epoch = epoch;
        tally.epoch_first_ts_ns = now;
        tally.epoch_first_address = address;
    }
    tally.last_ts_ns = now;
    true
}

/// Opens the tally of a fault just sent as a record. Racing CPUs may both send an
/// opener; the agent takes either.
#[inline(always)]
pub fn open(key: &TallyKey, address: u64, now: u64) {
    let tally = Tally {
        count: 0,
        pages: 0,
        last_page: address / PAGE_SIZE,
        last_ts_ns: now,
        epoch: epoch(),
        epoch_first_ts_ns: now,
        epoch_first_address: address,
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
fn epoch() -> u64 {
    TALLY_EPOCH.get(0).copied().unwrap_or(0)
}
