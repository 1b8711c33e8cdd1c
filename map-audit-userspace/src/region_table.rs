//! The agent's side of the kernel's region table and scope map: the changes only the
//! agent can make (regions of exited or exec'd processes, ranges the kernel's walk
//! handed over, regions a forked child inherits, processes that ran before the agent).
//! Keys are made exactly as the kernel makes them (`map_audit_common::blocks`).

use aya::maps::{
    Array, HashMap, MapData,
    lpm_trie::{Key, LpmTrie},
};
use map_audit_common::{
    blocks::block_order,
    region::{
        PendingCall, Region, RegionKeyData, ScopeEntry, TABLE_VERSION_AGENT, block_prefix_len,
        region_key_data,
    },
};

/// `BPF_NOEXIST`: insert only where the kernel has put nothing since.
const NO_EXIST: u64 = 1;

/// Ids the agent gives regions it creates itself, above any the kernel hands out and
/// below 2^53 (JSON numbers stay exact).
pub const AGENT_REGION_IDS: u64 = 1 << 52;
/// Generations the agent gives processes it puts in scope itself.
pub const AGENT_GENERATIONS: u32 = 1 << 31;

/// Entries in the kernel's tables, for `agent_stats` (leaks show up here).
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct TableEntries {
    pub regions: u64,
    pub scope: u64,
    pub pending_calls: u64,
}

pub struct RegionTable {
    regions: LpmTrie<MapData, RegionKeyData, Region>,
    scope: HashMap<MapData, u32, ScopeEntry>,
    pending: HashMap<MapData, u32, PendingCall>,
    /// The kernel's table versions; the agent owns slot `TABLE_VERSION_AGENT`.
    versions: Array<MapData, u64>,
    agent_edits: u64,
    next_region_id: u64,
    next_generation: u32,
}

impl RegionTable {
    pub fn new(
        regions: LpmTrie<MapData, RegionKeyData, Region>,
        scope: HashMap<MapData, u32, ScopeEntry>,
        pending: HashMap<MapData, u32, PendingCall>,
        versions: Array<MapData, u64>,
    ) -> Self {
        Self {
            regions,
            scope,
            pending,
            versions,
            agent_edits: 0,
            next_region_id: AGENT_REGION_IDS,
            next_generation: AGENT_GENERATIONS,
        }
    }

    /// Counts the entries of each table (walks them: milliseconds for a full table).
    pub fn entries(&self) -> TableEntries {
        TableEntries {
            regions: self.regions.keys().count() as u64,
            scope: self.scope.keys().count() as u64,
            pending_calls: self.pending.keys().count() as u64,
        }
    }

    /// Removes entries no live process owns: their process has left the scope map, or
    /// exec'd since (another generation). They come from records lost to a full ring
    /// buffer (counted there): a region the agent never heard of, or an exit it never
    /// saw. Walks the table (milliseconds when full). Returns how many went.
    pub fn sweep_orphans(&mut self) -> usize {
        // One scope lookup per process, not per block.
        let mut generations: std::collections::HashMap<u32, Option<u32>> = Default::default();
        let orphans: Vec<Key<RegionKeyData>> = self
            .regions
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, region)| {
                let data = key.data();
                let tgid = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                let generation = *generations
                    .entry(tgid)
                    .or_insert_with(|| self.scope.get(&tgid, 0).ok().map(|s| s.generation));
                generation != Some(region.generation)
            })
            .map(|(key, _)| key)
            .collect();
        for key in &orphans {
            let _ = self.regions.remove(key);
        }
        if !orphans.is_empty() {
            self.tables_changed();
        }
        orphans.len()
    }

    /// A region id for a region the agent creates.
    pub fn new_region_id(&mut self) -> u64 {
        self.next_region_id += 1;
        self.next_region_id
    }

    /// Puts `tgid` in scope (a process that ran before the agent); returns its generation.
    pub fn add_to_scope(&mut self, tgid: u32) -> anyhow::Result<u32> {
        self.next_generation += 1;
        let entry = ScopeEntry {
            generation: self.next_generation,
            ..Default::default()
        };
        self.scope.insert(tgid, entry, 0)?;
        self.tables_changed();
        Ok(entry.generation)
    }

    /// The fork's copy is in place: the child stops falling back to its parent's
    /// regions. Nothing changes if the child has exec'd or gone since.
    pub fn end_parent_fallback(&mut self, tgid: u32, generation: u32) {
        if let Ok(entry) = self.scope.get(&tgid, 0)
            && entry.generation == generation
        {
            let _ = self.scope.insert(
                tgid,
                ScopeEntry {
                    parent_tgid: 0,
                    parent_generation: 0,
                    ..entry
                },
                0,
            );
            self.tables_changed();
        }
    }

    /// Removes `region`'s entries, but only those still holding this region: the kernel
    /// may already have put a newer region at the same key.
    pub fn remove(&mut self, tgid: u32, region: &Region) {
        for key in block_keys(tgid, region) {
            if self
                .regions
                .get(&key, 0)
                .is_ok_and(|found| found.id == region.id)
            {
                let _ = self.regions.remove(&key);
            }
        }
        self.tables_changed();
    }

    /// Gives `region`'s entries its `--path` verdict (`region.path_filter`), where
    /// they still hold this region.
    pub fn set_path_state(&mut self, tgid: u32, region: &Region) {
        for key in block_keys(tgid, region) {
            if let Ok(mut found) = self.regions.get(&key, 0)
                && found.id == region.id
            {
                found.path_filter = region.path_filter;
                let _ = self.regions.insert(&key, found, 0);
            }
        }
        self.tables_changed();
    }

    /// Adds `region`'s entries, replacing what is there (a piece the kernel's walk
    /// could not make itself).
    pub fn insert(&mut self, tgid: u32, region: &Region) {
        self.insert_with(tgid, region, 0);
    }

    /// Adds `region`'s entries where the kernel has put nothing (inherited or loaded
    /// from /proc while the kernel may already track newer mappings).
    pub fn insert_if_absent(&mut self, tgid: u32, region: &Region) {
        self.insert_with(tgid, region, NO_EXIST);
    }

    fn insert_with(&mut self, tgid: u32, region: &Region, flags: u64) {
        for key in block_keys(tgid, region) {
            match self.regions.insert(&key, region, flags) {
                Ok(()) => {}
                Err(_) if flags == NO_EXIST => {} // the kernel's newer entry wins
                Err(err) => log::warn!("region table update failed for pid {tgid}: {err}"),
            }
        }
        self.tables_changed();
    }

    /// Tells the fault path's per-CPU memo that the tables changed. Called after the
    /// edits: a fault that looked the tables up in between is memoised under the old
    /// version and dropped at its next fault.
    fn tables_changed(&mut self) {
        self.agent_edits += 1;
        if let Err(err) = self.versions.set(TABLE_VERSION_AGENT, self.agent_edits, 0) {
            log::warn!("table version update failed: {err}");
        }
    }
}

fn block_keys(tgid: u32, region: &Region) -> impl Iterator<Item = Key<RegionKeyData>> {
    let end = region.end;
    let mut cursor = region.start;
    std::iter::from_fn(move || {
        if cursor >= end {
            return None;
        }
        let order = block_order(cursor, end);
        let key = Key::new(block_prefix_len(order), region_key_data(tgid, cursor));
        cursor += 1 << order;
        Some(key)
    })
}
