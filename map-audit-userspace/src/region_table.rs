//! The agent's side of the kernel's region table: the few changes only the agent can
//! make (regions of exited processes, ranges the kernel's unmap walk handed over).
//! Keys are made exactly as the kernel makes them (`map_audit_common::blocks`).

use aya::maps::{
    MapData,
    lpm_trie::{Key, LpmTrie},
};
use map_audit_common::{
    blocks::block_order,
    region::{Region, RegionKeyData, block_prefix_len, region_key_data},
};

pub struct RegionTable {
    map: LpmTrie<MapData, RegionKeyData, Region>,
}

impl RegionTable {
    pub fn new(map: LpmTrie<MapData, RegionKeyData, Region>) -> Self {
        Self { map }
    }

    /// Removes `region`'s entries, but only those still holding this region: the kernel
    /// may already have put a newer region at the same key.
    pub fn remove(&mut self, tgid: u32, region: &Region) {
        for key in block_keys(tgid, region) {
            if self
                .map
                .get(&key, 0)
                .is_ok_and(|found| found.id == region.id)
            {
                let _ = self.map.remove(&key);
            }
        }
    }

    /// Adds `region`'s entries (a piece kept after a partial unmap).
    pub fn insert(&mut self, tgid: u32, region: &Region) {
        for key in block_keys(tgid, region) {
            if let Err(err) = self.map.insert(&key, region, 0) {
                log::warn!("region table update failed for pid {tgid}: {err}");
            }
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
