//! Produced, delivered and lost counts, from the kernel's per-CPU counters and the
//! agent's own (declared in `map_audit_common::counters`). Reported in `agent_stats` and `agent_stopped` so that, for every kind,
//! produced = delivered + lost can be checked.

use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray};
pub use map_audit_common::counters::{AgentCounters, KernelCounters};
use serde::Serialize;

use crate::region_table::TableEntries;

/// Sums the `COUNTERS` per-CPU array.
pub fn read_kernel(map: &PerCpuArray<MapData, u64>) -> Result<KernelCounters> {
    KernelCounters::try_from_slots(|index| per_cpu_total(map, index, "the kernel's counters"))
}

/// Slot `index` of a per-CPU counter array, summed over the CPUs.
pub fn per_cpu_total(map: &PerCpuArray<MapData, u64>, index: u32, what: &str) -> Result<u64> {
    let values = map
        .get(&index, 0)
        .with_context(|| format!("reading {what} failed"))?;
    Ok(values.iter().sum())
}

/// Everything in one object for the JSON stream.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Counters {
    pub kernel: KernelCounters,
    pub agent: AgentCounters,
    /// Entries in the kernel's tables when the event was written.
    pub table_entries: TableEntries,
}
