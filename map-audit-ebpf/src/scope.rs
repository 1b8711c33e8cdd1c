//! Which processes are audited. Decided here so that out-of-scope events cost one
//! hash lookup and never reach the agent.

use aya_ebpf::helpers::bpf_get_current_comm;
use map_audit_common::counters::{SCOPE_ADDED, SCOPE_TABLE_FULL};

use crate::{counters::bump, maps};

/// Whether `tgid` is audited. The only check on the fault path.
#[inline(always)]
pub fn contains(tgid: u32) -> bool {
    maps::SCOPE.get_ptr(tgid).is_some()
}

/// Adds `tgid` (a forked child, or a process whose comm matched).
#[inline(always)]
pub fn add(tgid: u32) {
    match maps::SCOPE.insert(tgid, 1, 0) {
        Ok(()) => bump(SCOPE_ADDED),
        Err(_) => bump(SCOPE_TABLE_FULL),
    }
}

/// Scope check for the syscall hooks: a process not yet in scope joins it when
/// `--comm` filters exist and its comm matches one of them.
#[inline(always)]
pub fn contains_or_adopt(tgid: u32) -> bool {
    if contains(tgid) {
        return true;
    }
    if maps::agent_config().match_comm == 0 {
        return false;
    }
    let Ok(comm) = bpf_get_current_comm() else {
        return false;
    };
    if maps::SCOPE_COMMS.get_ptr(comm).is_none() {
        return false;
    }
    add(tgid);
    true
}
