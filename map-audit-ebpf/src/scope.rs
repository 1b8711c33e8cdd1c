//! Which processes are audited. Decided here so that out-of-scope events cost one
//! hash lookup and never reach the agent.

use aya_ebpf::helpers::{bpf_get_current_comm, generated::bpf_get_current_ancestor_cgroup_id};
use map_audit_common::{
    counters::{SCOPE_ADDED, SCOPE_TABLE_FULL},
    region::ScopeEntry,
};

use crate::{counters::bump, maps, region_cache, region_table::next_id};

/// The scope entry of `tgid`, if audited. The first check of every hook.
#[inline(always)]
pub fn get(tgid: u32) -> Option<ScopeEntry> {
    unsafe { maps::SCOPE.get(tgid) }.copied()
}

/// Puts `tgid` in scope with a fresh generation (and, after a fork, its parent's
/// regions as fallback). Returns the entry, or `None` when the table is full.
#[inline(always)]
pub fn add(tgid: u32, parent_tgid: u32, parent_generation: u32) -> Option<ScopeEntry> {
    let entry = ScopeEntry {
        generation: next_id() as u32,
        parent_tgid,
        parent_generation,
        _pad: 0,
    };
    match maps::SCOPE.insert(tgid, entry, 0) {
        Ok(()) => {
            region_cache::tables_changed();
            bump(SCOPE_ADDED);
            Some(entry)
        }
        Err(_) => {
            bump(SCOPE_TABLE_FULL);
            None
        }
    }
}

/// Scope check for the mmap hook: a process not yet in scope joins it under `--all`,
/// when it is in the `--cgroup` tree, or when its comm matches a `--comm`.
#[inline(always)]
pub fn get_or_adopt(tgid: u32) -> Option<ScopeEntry> {
    if let Some(entry) = get(tgid) {
        return Some(entry);
    }
    if adoptable(tgid) {
        add(tgid, 0, 0)
    } else {
        None
    }
}

#[inline(always)]
fn adoptable(tgid: u32) -> bool {
    let config = maps::agent_config();
    if tgid == config.agent_tgid {
        return false;
    }
    if config.scope_all != 0 {
        return true;
    }
    if config.cgroup_id != 0
        && unsafe { bpf_get_current_ancestor_cgroup_id(config.cgroup_level as i32) }
            == config.cgroup_id
    {
        return true;
    }
    config.match_comm != 0
        && bpf_get_current_comm().is_ok_and(|comm| maps::SCOPE_COMMS.get_ptr(comm).is_some())
}
