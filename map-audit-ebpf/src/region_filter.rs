//! The region filters (`--wx-only`, `--shared-only`, `--anon-only`, `--min-size`,
//! `--path`), decided on the fault path from the region's own fields.

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
    let config = agent_config();
    (config.wx_only == 0 || region.is_wx())
        && (config.shared_only == 0 || region.is_shared())
        && (config.anon_only == 0 || region.is_anonymous())
        && region.end - region.start >= config.min_size
        && region.path_filter != PATH_REJECTED
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
