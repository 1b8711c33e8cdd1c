//! The kernel's per-CPU counter arrays, read and summed over CPUs into the counter
//! sets declared in `map_audit_common::counters` (and Go mode's).

use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray};
use map_audit_common::counters::KernelCounters;

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
