//! Which processes are audited. Decided here so that out-of-scope events cost one
//! hash lookup and never reach the agent.

use aya_ebpf::helpers::bpf_get_current_comm;
use map_audit_common::{
    counters::{SCOPE_ADDED, SCOPE_TABLE_FULL},
    region::ScopeEntry,
};

use crate::{counters::bump, maps, region_table::next_id};

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
            bump(SCOPE_ADDED);
            Some(entry)
        }
        Err(_) => {
            bump(SCOPE_TABLE_FULL);
            None
        }
    }
}

/// Scope check for the mmap hook: a process not yet in scope joins it when `--comm`
/// filters exist and its comm matches one of them.
#[inline(always)]
pub fn get_or_adopt(tgid: u32) -> Option<ScopeEntry> {
    if let Some(entry) = get(tgid) {
        return Some(entry);
    }
    if maps::agent_config().match_comm == 0 {
        return None;
    }
    let comm = bpf_get_current_comm().ok()?;
    maps::SCOPE_COMMS.get_ptr(comm)?;
    add(tgid, 0, 0)
}
