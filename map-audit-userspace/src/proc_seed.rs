//! Processes already running when the agent starts (`--pid`, and `--comm` matches):
//! they enter the scope and their mappings enter the region table from /proc/PID/maps
//! before auditing begins.

use anyhow::{Context, Result};
use map_audit_common::region::{MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, Region};
use procfs::process::{MMPermissions, MMapPath, Process};

use crate::{
    correlator::Item, region_filter::RegionFilter, region_mirror::TrackedRegion,
    region_table::RegionTable,
};

/// Puts `pid` in scope and its mappings in the table; the item tells the pipeline.
pub fn load_running(table: &mut RegionTable, filter: &RegionFilter, pid: u32) -> Result<Item> {
    let process = Process::new(pid as i32).with_context(|| format!("pid {pid} is gone"))?;
    let comm = process.stat().map(|s| s.comm).unwrap_or_default();
    let maps = process
        .maps()
        .with_context(|| format!("reading /proc/{pid}/maps failed"))?;
    let generation = table.add_to_scope(pid)?;
    let mut regions = Vec::new();
    for map in maps {
        let path = match &map.pathname {
            MMapPath::Path(p) => Some(p.to_string_lossy().into()),
            MMapPath::Vsyscall => continue, // a kernel address, not the process's memory
            _ => None,
        };
        let region = Region {
            start: map.address.0,
            end: map.address.1,
            file_offset: map.offset,
            id: table.new_region_id(),
            prot: prot_bits(map.perms),
            flags: mmap_flags(map.perms, path.is_some()),
            generation,
            path_filter: filter.path_state(path.as_deref()),
        };
        table.insert_if_absent(pid, &region);
        regions.push(TrackedRegion { region, path });
    }
    Ok(Item::Seed { pid, comm, regions })
}

/// Every pid now (for `--all`).
pub fn all_pids() -> Vec<u32> {
    procfs::process::all_processes()
        .map(|all| all.filter_map(Result::ok).map(|p| p.pid as u32).collect())
        .unwrap_or_default()
}

/// Pids whose comm is one of `comms` (not the agent itself).
pub fn pids_with_comm(comms: &[String]) -> Vec<u32> {
    let me = std::process::id() as i32;
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(Result::ok)
        .filter(|p| p.pid != me)
        .filter(|p| p.stat().is_ok_and(|s| comms.contains(&s.comm)))
        .map(|p| p.pid as u32)
        .collect()
}

fn prot_bits(perms: MMPermissions) -> u32 {
    [
        (MMPermissions::READ, 1),
        (MMPermissions::WRITE, 2),
        (MMPermissions::EXECUTE, 4),
    ]
    .into_iter()
    .filter(|(p, _)| perms.contains(*p))
    .map(|(_, bit)| bit)
    .sum()
}

fn mmap_flags(perms: MMPermissions, file_backed: bool) -> u32 {
    let sharing = if perms.contains(MMPermissions::SHARED) {
        MAP_SHARED
    } else {
        MAP_PRIVATE
    };
    if file_backed {
        sharing
    } else {
        sharing | MAP_ANONYMOUS
    }
}
