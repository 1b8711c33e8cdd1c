//! The agent's side of the kernel's region table and scope map: the changes only the
//! agent can make (regions of exited or exec'd processes, ranges the kernel's walk
//! handed over, regions a forked child inherits, processes that ran before the agent).
//! Keys are made exactly as the kernel makes them (`map_audit_common::blocks`).
//!
//! The kernel owns every entry of a running process: the agent never rewrites one in
//! place. It inserts only where nothing is (`BPF_NOEXIST`), replaces or deletes only a
//! block that still holds exactly the region it means, keeps its `--path` verdicts in
//! a map of its own, and ends a fork's fallback by deleting the kernel's entry.

use map_audit_common::{
    blocks::block_order,
    region::{
        AGENT_REGION_IDS, ForkFallback, Region, ScopeEntry, block_prefix_len, key_owner,
        region_key_data,
    },
    region_split::Piece,
};

use crate::kernel::table_maps::{Insert, RegionKey, TableError, TableMaps};

/// Generations the agent gives processes it puts in scope itself.
pub const AGENT_GENERATIONS: u32 = 1 << 31;

/// Entries in the kernel's tables, for `agent_stats` (leaks show up here).
#[derive(Debug, Default, Clone, Copy, serde::Serialize, schemars::JsonSchema)]
pub struct TableEntries {
    pub regions: u64,
    pub scope: u64,
    pub pending_calls: u64,
}

pub struct RegionTable {
    maps: Box<dyn TableMaps>,
    agent_edits: u64,
    next_region_id: u64,
    next_generation: u32,
    /// Region blocks the agent could not insert because the table was full.
    pub blocks_not_inserted: u64,
    /// Removals and verdicts the kernel's tables refused (see `removal_failed`).
    pub edits_failed: u64,
}

impl RegionTable {
    pub fn new(maps: Box<dyn TableMaps>) -> Self {
        Self {
            maps,
            agent_edits: 0,
            next_region_id: AGENT_REGION_IDS,
            next_generation: AGENT_GENERATIONS,
            blocks_not_inserted: 0,
            edits_failed: 0,
        }
    }

    /// The tables themselves (tests read back what the agent did).
    #[cfg(test)]
    pub fn maps(&self) -> &dyn TableMaps {
        &*self.maps
    }

    /// Counts the entries of each table (walks them: milliseconds for a full table).
    pub fn entries(&self) -> TableEntries {
        TableEntries {
            regions: self.maps.regions().len() as u64,
            scope: self.maps.scope_len() as u64,
            pending_calls: self.maps.pending_calls_len() as u64,
        }
    }

    /// Removes entries no live process owns: their process has left the scope map, or
    /// exec'd since (another generation: it is in the key, so such an entry can never
    /// be a live one). They come from records lost to a full ring buffer (counted
    /// there). Walks the table (milliseconds when full). Returns how many went.
    pub fn sweep_orphans(&mut self) -> usize {
        // One scope lookup per process, not per block.
        let mut generations: std::collections::HashMap<u32, Option<u32>> = Default::default();
        let orphans: Vec<RegionKey> = self
            .maps
            .regions()
            .into_iter()
            .map(|(key, _)| key)
            .filter(|key| {
                let (tgid, generation) = key_owner(&key.1);
                let current = *generations
                    .entry(tgid)
                    .or_insert_with(|| self.maps.scope_get(tgid).map(|s| s.generation));
                current != Some(generation)
            })
            .collect();
        for key in &orphans {
            self.edits_failed += u64::from(removal_failed(self.maps.region_remove(key)));
        }
        if !orphans.is_empty() {
            self.tables_changed();
        }
        orphans.len()
    }

    /// The ranges of the regions the kernel holds for `tgid`'s generation `generation`
    /// (walks the whole table: only for a process the kernel adopted while the agent
    /// was starting).
    pub fn regions_of(&self, tgid: u32, generation: u32) -> Vec<(u64, u64)> {
        let mut ranges: Vec<(u64, u64)> = self
            .maps
            .regions()
            .into_iter()
            .filter(|(key, _)| key_owner(&key.1) == (tgid, generation))
            .map(|(_, region)| (region.start, region.end))
            .collect();
        ranges.sort_unstable();
        ranges.dedup();
        ranges
    }

    /// A region id for a region the agent creates.
    pub fn new_region_id(&mut self) -> u64 {
        self.next_region_id += 1;
        self.next_region_id
    }

    /// Puts `tgid` in scope (a process that ran before the agent, or the command it
    /// starts). If the kernel has adopted it already (`--all`, `--comm`, `--cgroup`),
    /// its entry stays: the regions the kernel made are in its generation.
    pub fn add_to_scope(&mut self, tgid: u32) -> anyhow::Result<ScopeEntry> {
        self.next_generation += 1;
        let entry = ScopeEntry {
            generation: self.next_generation,
            ..Default::default()
        };
        match self.maps.scope_insert_new(tgid, entry) {
            Ok(()) => {
                self.tables_changed();
                Ok(entry)
            }
            Err(TableError::Exists) => self
                .scope_entry(tgid)
                .ok_or_else(|| anyhow::anyhow!("pid {tgid} left the scope while it was added")),
            Err(err) => Err(anyhow::anyhow!(
                "adding pid {tgid} to the scope failed (the scope table holds at most 16,384 processes): {err:?}"
            )),
        }
    }

    /// `tgid`'s scope entry as the kernel has it now.
    pub fn scope_entry(&self, tgid: u32) -> Option<ScopeEntry> {
        self.maps.scope_get(tgid)
    }

    /// The fork's copy is in place: the child stops falling back to its parent's
    /// regions. Only the fallback of this child generation goes (a reused pid's new
    /// child has its own).
    pub fn end_fork_fallback(&mut self, child: u32, child_generation: u32) {
        if self
            .maps
            .fork_fallback_get(child)
            .is_some_and(|f| f.child_generation == child_generation)
        {
            let removed = self.maps.fork_fallback_remove(child);
            self.edits_failed += u64::from(removal_failed(removed));
            self.tables_changed();
        }
    }

    /// Children still falling back to their parents.
    pub fn fork_fallbacks(&self) -> Vec<(u32, ForkFallback)> {
        self.maps.fork_fallbacks()
    }

    /// The agent's `--path` verdict for a region the kernel made pending.
    pub fn set_path_verdict(&mut self, region_id: u64, verdict: u32) {
        if let Err(err) = self.maps.path_verdict_insert(region_id, verdict) {
            // Its faults keep coming to the agent, which filters them itself.
            self.edits_failed += 1;
            log::debug!("path verdict of region {region_id} not stored: {err:?}");
        }
    }

    /// The region is gone: its verdict too.
    pub fn forget_path_verdict(&mut self, region_id: u64) {
        let removed = self.maps.path_verdict_remove(region_id);
        self.edits_failed += u64::from(removal_failed(removed));
    }

    /// Adds `region`'s blocks where the table has nothing (a region from /proc or a
    /// fork's copy, while the kernel may already track newer mappings). Returns
    /// whether every block went in.
    pub fn insert_if_absent(&mut self, tgid: u32, region: &Region) -> bool {
        let mut whole = true;
        for key in block_keys(tgid, region) {
            whole &= self.insert_block(&key, region, Insert::IfAbsent);
        }
        self.tables_changed();
        whole
    }

    /// Replaces `old` by `pieces` of it (a change the kernel's walk handed over): the
    /// pieces go in first, so a fault meanwhile still finds its region, then `old`'s
    /// blocks that still hold it come out. A block holding anything else is newer and
    /// stays. Nothing happens if no block holds `old` any more: the agent reads its
    /// records late, and the kernel may have unmapped or changed the region since (a
    /// piece inserted then would bring back a block of a region that is gone).
    pub fn replace_with_pieces(&mut self, tgid: u32, old: &Region, pieces: &[Piece]) {
        let still_there = block_keys(tgid, old).any(|key| {
            self.maps
                .region_get(&key)
                .is_ok_and(|found| same_region(&found, old))
        });
        if !still_there {
            return;
        }
        for piece in pieces {
            let region = old.piece(piece);
            for key in block_keys(tgid, &region) {
                match self.maps.region_get(&key) {
                    Ok(found) if same_region(&found, old) => {
                        self.insert_block(&key, &region, Insert::IfPresent);
                    }
                    Err(TableError::Missing) => {
                        self.insert_block(&key, &region, Insert::IfAbsent);
                    }
                    _ => {}
                }
            }
        }
        self.remove(tgid, old);
    }

    /// Removes `region`'s blocks that still hold exactly it: the kernel may have put a
    /// newer region (or a piece of this one) at the same key.
    pub fn remove(&mut self, tgid: u32, region: &Region) {
        for key in block_keys(tgid, region) {
            if self
                .maps
                .region_get(&key)
                .is_ok_and(|found| same_region(&found, region))
            {
                self.edits_failed += u64::from(removal_failed(self.maps.region_remove(&key)));
            }
        }
        self.tables_changed();
    }

    /// One block; a full table is counted. Returns whether it went in.
    fn insert_block(&mut self, key: &RegionKey, region: &Region, insert: Insert) -> bool {
        match self.maps.region_insert(key, region, insert) {
            Ok(()) => true,
            // Something newer is there (NOEXIST), or the block just went (EXIST).
            Err(TableError::Exists | TableError::Missing) => false,
            Err(TableError::Failed(err)) => {
                self.blocks_not_inserted += 1;
                log::debug!("region table insert failed: {err}");
                false
            }
        }
    }

    /// Tells the fault path's per-CPU memos (regions, unwind rows) that the tables
    /// changed. Called after the edits: a fault that looked the tables up in between is
    /// memoised under the old version and dropped at its next fault.
    pub fn tables_changed(&mut self) {
        self.agent_edits += 1;
        if let Err(err) = self.maps.set_agent_version(self.agent_edits) {
            log::warn!("table version update failed: {err:?}");
        }
    }
}

/// Whether a table entry holds exactly `region` (not a piece of it or another).
fn same_region(found: &Region, region: &Region) -> bool {
    found.id == region.id
        && found.start == region.start
        && found.end == region.end
        && found.prot == region.prot
}

/// Whether a removal from a kernel table failed for another reason than the entry
/// being gone already (the kernel or a racing removal took it first).
pub fn removal_failed(result: Result<(), impl Into<TableError>>) -> bool {
    match result.map_err(Into::into) {
        Ok(()) | Err(TableError::Missing) => false,
        Err(err) => {
            log::debug!("kernel table removal failed: {err:?}");
            true
        }
    }
}

fn block_keys(tgid: u32, region: &Region) -> impl Iterator<Item = RegionKey> {
    let (end, generation) = (region.end, region.generation);
    let mut cursor = region.start;
    std::iter::from_fn(move || {
        if cursor >= end {
            return None;
        }
        let order = block_order(cursor, end);
        let key = (
            block_prefix_len(order),
            region_key_data(tgid, generation, cursor),
        );
        cursor += 1 << order;
        Some(key)
    })
}
