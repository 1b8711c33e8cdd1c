//! Produced, delivered and lost counts, from the kernel's per-CPU counters and the
//! agent's own. Reported in `agent_stats` and `agent_stopped` so that, for every kind,
//! produced = delivered + lost can be checked.

use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray};
use map_audit_common::counters as idx;
use serde::Serialize;

use crate::region_table::TableEntries;

/// Kernel-side counts, summed over CPUs.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct KernelCounters {
    /// Audited write faults (produced).
    pub faults_matched: u64,
    pub faults_lost_ringbuf_full: u64,
    /// Faults held back by `--rate-limit` (a counted loss).
    pub faults_rate_limited: u64,
    /// Faults counted in the kernel's tallies rather than sent (aggregated mode; in the
    /// aggregates' counts, not a loss).
    pub faults_counted_in_kernel: u64,
    /// Faults sent as records because the kernel's tally table was full (not a loss).
    pub fault_aggregates_full: u64,
    /// Region records produced (mapped, unmapped, protected, ranges handed over).
    pub region_events: u64,
    pub region_events_lost_ringbuf_full: u64,
    /// Process records produced (fork, exec, exit).
    pub process_records: u64,
    pub process_records_lost_ringbuf_full: u64,
    /// Region blocks that did not fit in the region table: part of a region unaudited.
    pub region_table_full: u64,
    /// mmap/munmap calls whose arguments could not be saved: the call was not tracked.
    pub pending_table_full: u64,
    pub scope_added: u64,
    pub scope_table_full: u64,
    /// Faults in tracked regions the region filters exclude (by choice, not a loss).
    pub faults_filtered: u64,
    /// Unmap/mprotect ranges the kernel handed to the agent to finish (not a loss).
    pub ranges_handed_to_agent: u64,
    /// Faults of a just-forked child matched through its parent's regions (not a loss).
    pub faults_matched_via_parent: u64,
    /// Stacks that took `MAX_STACK_DEPTH` frames with more left.
    pub stacks_truncated: u64,
    pub stacks_failed: u64,
    /// Stacks that ended at a frame without an unwind table, at unreadable stack
    /// memory, or in code not in a file (JIT): all marked truncated.
    pub stacks_no_unwind_info: u64,
    pub stacks_unreadable: u64,
    pub stacks_in_anonymous_code: u64,
    /// Mapped-file (path) records produced and lost.
    pub file_records: u64,
    pub file_records_lost_ringbuf_full: u64,
    /// A just-forked child's write faults its parent's regions could not place (the
    /// parent changed its mappings since the fork): a counted loss.
    pub faults_unattributed_after_fork: u64,
    /// Execs whose new mappings could not be read before the program ran: its
    /// program's and interpreter's segments and stack are unaudited.
    pub exec_mappings_unread: u64,
    /// brk calls whose heap could not be followed.
    pub brk_untracked: u64,
    /// Region-table edits that went ahead without waiting out another thread's edit of
    /// the same process (the wait timed out).
    pub table_lock_timeouts: u64,
}

impl KernelCounters {
    /// Sums the `COUNTERS` per-CPU array.
    pub fn read(map: &PerCpuArray<MapData, u64>) -> Result<Self> {
        let get = |index| per_cpu_total(map, index, "the kernel's counters");
        Ok(Self {
            faults_matched: get(idx::FAULTS_MATCHED)?,
            faults_lost_ringbuf_full: get(idx::FAULTS_LOST_RINGBUF_FULL)?,
            faults_rate_limited: get(idx::FAULTS_RATE_LIMITED)?,
            faults_counted_in_kernel: get(idx::FAULTS_COUNTED_IN_KERNEL)?,
            fault_aggregates_full: get(idx::FAULT_AGGREGATES_FULL)?,
            region_events: get(idx::REGION_EVENTS)?,
            region_events_lost_ringbuf_full: get(idx::REGION_EVENTS_LOST_RINGBUF_FULL)?,
            process_records: get(idx::PROCESS_RECORDS)?,
            process_records_lost_ringbuf_full: get(idx::PROCESS_RECORDS_LOST_RINGBUF_FULL)?,
            region_table_full: get(idx::REGION_TABLE_FULL)?,
            pending_table_full: get(idx::PENDING_TABLE_FULL)?,
            scope_added: get(idx::SCOPE_ADDED)?,
            scope_table_full: get(idx::SCOPE_TABLE_FULL)?,
            ranges_handed_to_agent: get(idx::RANGES_HANDED_TO_AGENT)?,
            faults_filtered: get(idx::FAULTS_FILTERED)?,
            faults_matched_via_parent: get(idx::FAULTS_MATCHED_VIA_PARENT)?,
            stacks_truncated: get(idx::STACKS_TRUNCATED)?,
            stacks_failed: get(idx::STACKS_FAILED)?,
            stacks_no_unwind_info: get(idx::STACKS_NO_UNWIND_INFO)?,
            stacks_unreadable: get(idx::STACKS_UNREADABLE)?,
            stacks_in_anonymous_code: get(idx::STACKS_IN_ANONYMOUS_CODE)?,
            file_records: get(idx::FILE_RECORDS)?,
            file_records_lost_ringbuf_full: get(idx::FILE_RECORDS_LOST_RINGBUF_FULL)?,
            faults_unattributed_after_fork: get(idx::FAULTS_UNATTRIBUTED_AFTER_FORK)?,
            exec_mappings_unread: get(idx::EXEC_MAPPINGS_UNREAD)?,
            brk_untracked: get(idx::BRK_UNTRACKED)?,
            table_lock_timeouts: get(idx::TABLE_LOCK_TIMEOUTS)?,
        })
    }
}

/// Slot `index` of a per-CPU counter array, summed over the CPUs.
pub fn per_cpu_total(map: &PerCpuArray<MapData, u64>, index: u32, what: &str) -> Result<u64> {
    let values = map
        .get(&index, 0)
        .with_context(|| format!("reading {what} failed"))?;
    Ok(values.iter().sum())
}

/// Agent-side counts.
#[derive(Debug, Default, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct AgentCounters {
    /// Faults delivered (in aggregated mode, the sum of the events' `count`).
    pub faults_delivered: u64,
    /// `write_fault` events written.
    pub write_fault_events: u64,
    /// Faults the kernel sent while a region's `--path` verdict was pending and the
    /// agent then filtered out (by choice, not a loss).
    pub faults_filtered_by_agent: u64,
    /// Region and process records received (= kernel `region_events` +
    /// `process_records` minus their losses).
    pub region_and_process_records_delivered: u64,
    /// Writable regions the agent closed itself (exec, exit).
    pub regions_closed_by_agent: u64,
    /// Mapped-file (path) records received.
    pub file_records_delivered: u64,
    /// Ring-buffer items that could not be decoded.
    pub records_undecodable: u64,
    /// Stacks cut to `--max-stack-depth` frames for the output.
    pub stacks_cut_for_output: u64,
    /// Stack frames left without a symbol.
    pub frames_unsymbolized: u64,
    /// File-backed regions reported without a path (neither the kernel's capture nor
    /// the /proc snapshot had it).
    pub paths_unresolved: u64,
    /// Captured paths deeper than the kernel walks (reported with a leading "...").
    pub paths_truncated: u64,
    /// Lines that could not be written (output closed or failing).
    pub lines_unwritten: u64,
    /// Region blocks the agent could not put in the kernel's table (it was full): part
    /// of a region from /proc or a fork's copy unaudited.
    pub region_blocks_not_inserted: u64,
    /// Processes that kept changing their mappings while the agent loaded them from
    /// /proc at start: loaded as last read.
    pub processes_seeded_unsettled: u64,
    /// Executable files whose unwind rows did not fit (`--unwind-table-rows`): their
    /// frames end stacks.
    pub unwind_table_full: u64,
    /// Executable files without CFI (or unreadable): their frames end stacks, or are
    /// walked by frame pointers with `--unwind auto`.
    pub unwind_info_missing: u64,
    /// Unwind tables built (not a loss).
    pub unwind_tables_built: u64,
}

/// Everything in one object for the JSON stream.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Counters {
    pub kernel: KernelCounters,
    pub agent: AgentCounters,
    /// Entries in the kernel's tables when the event was written.
    pub table_entries: TableEntries,
}
