//! The kernel tables the agent edits, behind one narrow interface: `KernelMaps` (the
//! loaded object's BPF maps) in the agent, `MemoryMaps` (plain collections with the
//! same semantics) in unit tests and the pipeline benchmark, so the correlator, the
//! region table's rules and the seed run without root or a kernel.

use std::collections::BTreeMap;

use aya::maps::{
    Array, HashMap, MapData, MapError,
    lpm_trie::{Key, LpmTrie},
};
use map_audit_common::region::{
    ForkFallback, PendingCall, Region, RegionKeyData, ScopeEntry, TABLE_VERSION_AGENT,
};

/// An entry of the region table: prefix length in bits and key bytes.
pub type RegionKey = (u32, RegionKeyData);

/// Why an edit did not happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    /// The key is there already (an insert where nothing may be).
    Exists,
    /// The key is not there.
    Missing,
    /// Anything else: a full table, a failed system call.
    Failed(String),
}

/// How an insert treats an entry already at the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    /// `BPF_NOEXIST`: only where nothing is.
    IfAbsent,
    /// `BPF_EXIST`: only over an entry that is there.
    IfPresent,
}

/// What the agent does to the kernel's tables.
pub trait TableMaps: Send {
    /// The entry at `key`, as the kernel's longest-prefix lookup finds it.
    fn region_get(&self, key: &RegionKey) -> Result<Region, TableError>;
    fn region_insert(
        &mut self,
        key: &RegionKey,
        region: &Region,
        insert: Insert,
    ) -> Result<(), TableError>;
    fn region_remove(&mut self, key: &RegionKey) -> Result<(), TableError>;
    /// Every entry (walks the table).
    fn regions(&self) -> Vec<(RegionKey, Region)>;
    fn scope_get(&self, tgid: u32) -> Option<ScopeEntry>;
    /// Adds `tgid` only if the kernel has not (`Exists` if it has).
    fn scope_insert_new(&mut self, tgid: u32, entry: ScopeEntry) -> Result<(), TableError>;
    fn scope_len(&self) -> usize;
    fn pending_calls_len(&self) -> usize;
    fn fork_fallback_get(&self, child: u32) -> Option<ForkFallback>;
    fn fork_fallback_remove(&mut self, child: u32) -> Result<(), TableError>;
    fn fork_fallbacks(&self) -> Vec<(u32, ForkFallback)>;
    fn path_verdict_insert(&mut self, region_id: u64, verdict: u32) -> Result<(), TableError>;
    fn path_verdict_remove(&mut self, region_id: u64) -> Result<(), TableError>;
    /// Sets the agent's slot of the table versions (the fault path's memos).
    fn set_agent_version(&mut self, version: u64) -> Result<(), TableError>;
}

/// The loaded object's maps.
pub struct KernelMaps {
    pub regions: LpmTrie<MapData, RegionKeyData, Region>,
    pub scope: HashMap<MapData, u32, ScopeEntry>,
    pub pending: HashMap<MapData, u32, PendingCall>,
    pub fork_fallbacks: HashMap<MapData, u32, ForkFallback>,
    pub path_verdicts: HashMap<MapData, u64, u32>,
    /// The kernel's table versions; the agent owns slot `TABLE_VERSION_AGENT`.
    pub versions: Array<MapData, u64>,
}

const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
/// `BPF_NOEXIST` and `BPF_EXIST`.
const NO_EXIST: u64 = 1;
const EXIST: u64 = 2;

impl From<MapError> for TableError {
    fn from(err: MapError) -> Self {
        let errno = match &err {
            MapError::SyscallError(e) => e.io_error.raw_os_error(),
            MapError::KeyNotFound => Some(ENOENT),
            _ => None,
        };
        match errno {
            Some(EEXIST) => TableError::Exists,
            Some(ENOENT) => TableError::Missing,
            _ => TableError::Failed(err.to_string()),
        }
    }
}

fn lpm_key(key: &RegionKey) -> Key<RegionKeyData> {
    Key::new(key.0, key.1)
}

impl TableMaps for KernelMaps {
    fn region_get(&self, key: &RegionKey) -> Result<Region, TableError> {
        Ok(self.regions.get(&lpm_key(key), 0)?)
    }

    fn region_insert(
        &mut self,
        key: &RegionKey,
        region: &Region,
        insert: Insert,
    ) -> Result<(), TableError> {
        let flags = match insert {
            Insert::IfAbsent => NO_EXIST,
            Insert::IfPresent => EXIST,
        };
        Ok(self.regions.insert(&lpm_key(key), region, flags)?)
    }

    fn region_remove(&mut self, key: &RegionKey) -> Result<(), TableError> {
        Ok(self.regions.remove(&lpm_key(key))?)
    }

    fn regions(&self) -> Vec<(RegionKey, Region)> {
        self.regions
            .iter()
            .filter_map(Result::ok)
            .map(|(key, region)| ((key.prefix_len(), key.data()), region))
            .collect()
    }

    fn scope_get(&self, tgid: u32) -> Option<ScopeEntry> {
        self.scope.get(&tgid, 0).ok()
    }

    fn scope_insert_new(&mut self, tgid: u32, entry: ScopeEntry) -> Result<(), TableError> {
        Ok(self.scope.insert(tgid, entry, NO_EXIST)?)
    }

    fn scope_len(&self) -> usize {
        self.scope.keys().count()
    }

    fn pending_calls_len(&self) -> usize {
        self.pending.keys().count()
    }

    fn fork_fallback_get(&self, child: u32) -> Option<ForkFallback> {
        self.fork_fallbacks.get(&child, 0).ok()
    }

    fn fork_fallback_remove(&mut self, child: u32) -> Result<(), TableError> {
        Ok(self.fork_fallbacks.remove(&child)?)
    }

    fn fork_fallbacks(&self) -> Vec<(u32, ForkFallback)> {
        self.fork_fallbacks.iter().filter_map(Result::ok).collect()
    }

    fn path_verdict_insert(&mut self, region_id: u64, verdict: u32) -> Result<(), TableError> {
        Ok(self.path_verdicts.insert(region_id, verdict, 0)?)
    }

    fn path_verdict_remove(&mut self, region_id: u64) -> Result<(), TableError> {
        Ok(self.path_verdicts.remove(&region_id)?)
    }

    fn set_agent_version(&mut self, version: u64) -> Result<(), TableError> {
        Ok(self.versions.set(TABLE_VERSION_AGENT, version, 0)?)
    }
}

/// The tables as plain collections, with the kernel's semantics (longest-prefix
/// lookups, `NOEXIST`/`EXIST` inserts). Tests and benchmarks put in what the kernel
/// would have (`scope`, `fork_fallbacks`, `regions`) and read back what the agent did.
#[derive(Debug, Default)]
pub struct MemoryMaps {
    pub regions: BTreeMap<RegionKey, Region>,
    pub scope: BTreeMap<u32, ScopeEntry>,
    pub fork_fallbacks: BTreeMap<u32, ForkFallback>,
    pub path_verdicts: BTreeMap<u64, u32>,
    pub agent_version: u64,
}

/// Whether the first `bits` bits of `a` and `b` are equal.
fn prefix_matches(a: &RegionKeyData, b: &RegionKeyData, bits: u32) -> bool {
    let (bytes, rest) = ((bits / 8) as usize, bits % 8);
    a[..bytes] == b[..bytes] && (rest == 0 || (a[bytes] ^ b[bytes]) >> (8 - rest) == 0)
}

fn missing<T>(found: Option<T>) -> Result<T, TableError> {
    found.ok_or(TableError::Missing)
}

impl TableMaps for MemoryMaps {
    fn region_get(&self, key: &RegionKey) -> Result<Region, TableError> {
        let found = self
            .regions
            .iter()
            .filter(|((len, data), _)| *len <= key.0 && prefix_matches(data, &key.1, *len))
            .max_by_key(|((len, _), _)| *len)
            .map(|(_, region)| *region);
        missing(found)
    }

    fn region_insert(
        &mut self,
        key: &RegionKey,
        region: &Region,
        insert: Insert,
    ) -> Result<(), TableError> {
        match (insert, self.regions.contains_key(key)) {
            (Insert::IfAbsent, true) => Err(TableError::Exists),
            (Insert::IfPresent, false) => Err(TableError::Missing),
            _ => {
                self.regions.insert(*key, *region);
                Ok(())
            }
        }
    }

    fn region_remove(&mut self, key: &RegionKey) -> Result<(), TableError> {
        missing(self.regions.remove(key)).map(drop)
    }

    fn regions(&self) -> Vec<(RegionKey, Region)> {
        self.regions.iter().map(|(k, r)| (*k, *r)).collect()
    }

    fn scope_get(&self, tgid: u32) -> Option<ScopeEntry> {
        self.scope.get(&tgid).copied()
    }

    fn scope_insert_new(&mut self, tgid: u32, entry: ScopeEntry) -> Result<(), TableError> {
        if self.scope.contains_key(&tgid) {
            return Err(TableError::Exists);
        }
        self.scope.insert(tgid, entry);
        Ok(())
    }

    fn scope_len(&self) -> usize {
        self.scope.len()
    }

    fn pending_calls_len(&self) -> usize {
        0
    }

    fn fork_fallback_get(&self, child: u32) -> Option<ForkFallback> {
        self.fork_fallbacks.get(&child).copied()
    }

    fn fork_fallback_remove(&mut self, child: u32) -> Result<(), TableError> {
        missing(self.fork_fallbacks.remove(&child)).map(drop)
    }

    fn fork_fallbacks(&self) -> Vec<(u32, ForkFallback)> {
        self.fork_fallbacks.iter().map(|(k, f)| (*k, *f)).collect()
    }

    fn path_verdict_insert(&mut self, region_id: u64, verdict: u32) -> Result<(), TableError> {
        self.path_verdicts.insert(region_id, verdict);
        Ok(())
    }

    fn path_verdict_remove(&mut self, region_id: u64) -> Result<(), TableError> {
        missing(self.path_verdicts.remove(&region_id)).map(drop)
    }

    fn set_agent_version(&mut self, version: u64) -> Result<(), TableError> {
        self.agent_version = version;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use map_audit_common::region::{LOOKUP_PREFIX_LEN, block_prefix_len, region_key_data};

    use super::*;

    #[test]
    fn memory_lookups_find_the_longest_prefix_like_the_kernel() {
        let mut maps = MemoryMaps::default();
        let block = (block_prefix_len(16), region_key_data(7, 1, 0x10000));
        let region = Region {
            start: 0x10000,
            end: 0x20000,
            ..Default::default()
        };
        maps.region_insert(&block, &region, Insert::IfAbsent)
            .unwrap();
        let inside = (LOOKUP_PREFIX_LEN, region_key_data(7, 1, 0x1f000));
        let outside = (LOOKUP_PREFIX_LEN, region_key_data(7, 1, 0x20000));
        let other_process = (LOOKUP_PREFIX_LEN, region_key_data(8, 1, 0x1f000));
        assert_eq!(maps.region_get(&inside), Ok(region));
        assert_eq!(maps.region_get(&outside), Err(TableError::Missing));
        assert_eq!(maps.region_get(&other_process), Err(TableError::Missing));
        assert_eq!(
            maps.region_insert(&block, &region, Insert::IfAbsent),
            Err(TableError::Exists)
        );
    }
}
