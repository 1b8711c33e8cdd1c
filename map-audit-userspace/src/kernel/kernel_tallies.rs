//! The kernel's fault tallies (default mode; see `map_audit_common::tally`): read at
//! each flush, retired when their region or process ends. One map lookup (a system
//! call) per tally per flush.

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, MapData};
use map_audit_common::tally::{Tally, TallyKey};

use crate::kernel::region_table::removal_failed;

pub struct KernelTallies {
    tallies: HashMap<MapData, TallyKey, Tally>,
    /// The kernel's flush interval number (`TALLY_EPOCH`).
    epoch: Array<MapData, u64>,
    current_epoch: u64,
    /// Tallies whose removal failed (see `region_table::removal_failed`).
    pub removals_failed: u64,
}

impl KernelTallies {
    pub fn new(tallies: HashMap<MapData, TallyKey, Tally>, epoch: Array<MapData, u64>) -> Self {
        Self {
            tallies,
            epoch,
            current_epoch: 0,
            removals_failed: 0,
        }
    }

    /// Starts a new flush interval (each tally's first fault in it goes as a record);
    /// returns the interval that closes.
    pub fn next_epoch(&mut self) -> Result<u64> {
        let closing = self.current_epoch;
        self.epoch
            .set(0, closing + 1, 0)
            .context("writing the tally epoch failed")?;
        self.current_epoch = closing + 1;
        Ok(closing)
    }

    /// The tally of `key`, if the kernel has one.
    pub fn get(&self, key: &TallyKey) -> Option<Tally> {
        self.tallies.get(key, 0).ok()
    }

    /// Forgets a tally whose region or process is gone.
    pub fn remove(&mut self, key: &TallyKey) {
        self.removals_failed += u64::from(removal_failed(self.tallies.remove(key)));
    }
}
