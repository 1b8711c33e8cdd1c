//! A per-CPU memo of the fault path's last scope and region lookups. Faults come in
//! runs (one process, one region), and a hit skips the scope hash lookup and the LPM
//! lookup. An entry is valid while neither table has changed: every writer bumps its
//! slot of `TABLE_VERSIONS` after its edits, and an entry keeps the versions read
//! before its own lookups, so an edit that races a fill leaves the entry stale, never
//! wrong.
//!
//! Fills and hits are plain loads and stores with no user-memory access between them,
//! so no other fault program can nest into them on this CPU.

use map_audit_common::region::{Region, ScopeEntry, TABLE_VERSION_AGENT, TABLE_VERSION_KERNEL};

use crate::{
    counters::add_one,
    maps::{REGION_CACHE, TABLE_VERSIONS},
    region_table, scope,
};

/// The last lookups of one CPU.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RegionCache {
    kernel_version: u64,
    agent_version: u64,
    tgid: u32,
    /// Non-zero: `scope` is the process's entry; zero: the process is out of scope.
    in_scope: u32,
    /// Non-zero: `region` is one of the process's own regions.
    has_region: u32,
    _pad: u32,
    scope: ScopeEntry,
    region: Region,
}

/// Records that the kernel changed the region table or the scope map. Call after the
/// change is complete.
#[inline(always)]
pub fn tables_changed() {
    if let Some(slot) = TABLE_VERSIONS.get_ptr_mut(TABLE_VERSION_KERNEL) {
        unsafe { add_one(slot) };
    }
}

/// A slot of `TABLE_VERSIONS` (`TABLE_VERSION_KERNEL` or `TABLE_VERSION_AGENT`).
#[inline(always)]
pub fn version(slot: u32) -> u64 {
    TABLE_VERSIONS.get(slot).copied().unwrap_or(0)
}

/// The region of an in-scope `tgid` containing `address`, and whether it is the
/// process's own (see `region_table::lookup_for_fault`), from this CPU's memo when it
/// still holds.
#[inline(always)]
pub fn region_for_fault(tgid: u32, address: u64) -> Option<(Region, bool)> {
    let kernel_version = version(TABLE_VERSION_KERNEL);
    let agent_version = version(TABLE_VERSION_AGENT);
    let Some(cache) = REGION_CACHE.get_ptr_mut(0) else {
        let scope = scope::get(tgid)?;
        return region_table::lookup_for_fault(tgid, &scope, address);
    };
    let cache = unsafe { &mut *cache };
    let scope = if cache.tgid == tgid
        && cache.kernel_version == kernel_version
        && cache.agent_version == agent_version
    {
        if cache.in_scope == 0 {
            return None;
        }
        if cache.has_region != 0 && cache.region.start <= address && address < cache.region.end {
            return Some((cache.region, true));
        }
        cache.scope
    } else {
        let found = scope::get(tgid);
        cache.kernel_version = kernel_version;
        cache.agent_version = agent_version;
        cache.tgid = tgid;
        cache.in_scope = u32::from(found.is_some());
        cache.has_region = 0;
        cache.scope = found.unwrap_or_default();
        found?
    };
    let (region, own) = region_table::lookup_for_fault(tgid, &scope, address)?;
    // A parent's region (right after a fork) is not memoised: it lasts until the agent
    // copies it, and the via-parent counter counts each such fault.
    if own {
        cache.region = region;
        cache.has_region = 1;
    }
    Some((region, own))
}
