//! The region filters (`--wx-only`, `--shared-only`, `--anon-only`, `--min-size`,
//! `--path`), decided on the fault path: the rule shared with the agent
//! (`map_audit_common::region_filter`) and the agent's `--path` verdict.

use map_audit_common::region::{MAP_ANONYMOUS, PATH_MATCHED, PATH_PENDING, PATH_REJECTED, Region};

use crate::maps::{PATH_VERDICTS, agent_config};

/// Whether faults in `region` are audited. A region whose `--path` verdict the agent
/// has given gets it here (`path_filter` becomes `PATH_MATCHED` or `PATH_REJECTED`).
#[inline(always)]
pub fn audited(region: &mut Region) -> bool {
    if region.path_filter == PATH_PENDING
        && let Some(verdict) = unsafe { PATH_VERDICTS.get(&region.id) }
    {
        region.path_filter = *verdict;
    }
    agent_config().region_filter.admits(region) && region.path_filter != PATH_REJECTED
}

/// The `--path` state of a new region: file-backed ones wait for the agent's verdict
/// (their faults go to it meanwhile), anonymous ones never match.
#[inline(always)]
pub fn initial_path_state(flags: u32) -> u32 {
    if agent_config().path_filter == 0 {
        PATH_MATCHED
    } else if flags & MAP_ANONYMOUS != 0 {
        PATH_REJECTED
    } else {
        PATH_PENDING
    }
}
