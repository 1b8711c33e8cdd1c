//! Go mode's counts: the kernel's (`GO_COUNTERS`, summed over CPUs) and the agent's.
//! Every loss is here: race or crash records the ring buffer could not take, writes
//! the tables could not hold, goroutine ids that could not be read, undecodable
//! records and frames without a name.

use anyhow::Result;
use aya::maps::{MapData, PerCpuArray};
use map_audit_common::go_maps::counters as idx;
use serde::Serialize;

use crate::stats::per_cpu_total;

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GoKernelCounters {
    pub writes_entered: u64,
    pub writes_returned: u64,
    /// Same goroutine entering the same map again (stack growth): not a race.
    pub reentries: u64,
    pub races: u64,
    pub races_lost_ringbuf_full: u64,
    /// Open writes older than the TTL, replaced without a report.
    pub writers_expired: u64,
    pub writer_table_full: u64,
    pub goid_unreadable: u64,
    pub stacks_truncated: u64,
    pub crashes: u64,
    pub crashes_lost_ringbuf_full: u64,
    pub writes_closed_by_panic: u64,
}

impl GoKernelCounters {
    pub fn read(map: &PerCpuArray<MapData, u64>) -> Result<Self> {
        let get = |index| per_cpu_total(map, index, "the Go mode counters");
        Ok(Self {
            writes_entered: get(idx::WRITES_ENTERED)?,
            writes_returned: get(idx::WRITES_RETURNED)?,
            reentries: get(idx::REENTRIES)?,
            races: get(idx::RACES)?,
            races_lost_ringbuf_full: get(idx::RACES_LOST_RINGBUF_FULL)?,
            writers_expired: get(idx::WRITERS_EXPIRED)?,
            writer_table_full: get(idx::WRITER_TABLE_FULL)?,
            goid_unreadable: get(idx::GOID_UNREADABLE)?,
            stacks_truncated: get(idx::STACKS_TRUNCATED)?,
            crashes: get(idx::CRASHES)?,
            crashes_lost_ringbuf_full: get(idx::CRASHES_LOST_RINGBUF_FULL)?,
            writes_closed_by_panic: get(idx::WRITES_CLOSED_BY_PANIC)?,
        })
    }
}

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GoAgentCounters {
    /// `go_map_concurrent_write` events printed.
    pub races_reported: u64,
    /// Races folded into `suppressed` (same map and call sites within an interval).
    pub races_suppressed: u64,
    pub crashes_reported: u64,
    /// Ring-buffer records that failed the checked decoding (a loss).
    pub records_undecodable: u64,
    /// Stack frames no function of the binary contains (printed without a name).
    pub frames_unknown: u64,
}

#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct GoCounters {
    pub kernel: GoKernelCounters,
    pub agent: GoAgentCounters,
}
