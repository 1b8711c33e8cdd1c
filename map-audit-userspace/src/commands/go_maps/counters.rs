//! Go mode's counts: the kernel's (`GO_COUNTERS`, summed over CPUs) and the agent's,
//! declared in `map_audit_common::go_maps::counters`. Every loss is there: race or
//! crash records the ring buffer could not take, writes the tables could not hold,
//! goroutine ids that could not be read, undecodable records and frames without a name.

use anyhow::Result;
use aya::maps::{MapData, PerCpuArray};
pub use map_audit_common::go_maps::counters::{GoAgentCounters, GoKernelCounters};
use serde::Serialize;

use crate::kernel::counters::per_cpu_total;

/// Sums the `GO_COUNTERS` per-CPU array.
pub fn read_kernel(map: &PerCpuArray<MapData, u64>) -> Result<GoKernelCounters> {
    GoKernelCounters::try_from_slots(|index| per_cpu_total(map, index, "the Go mode counters"))
}

#[derive(Debug, Default, Clone, Copy, Serialize, schemars::JsonSchema, PartialEq, Eq)]
pub struct GoCounters {
    pub kernel: GoKernelCounters,
    pub agent: GoAgentCounters,
}
