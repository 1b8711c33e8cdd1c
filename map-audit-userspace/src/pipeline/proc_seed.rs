//! Processes already running when the agent starts (`--pid`, and `--comm` matches):
//! they enter the scope and their mappings enter the region table from /proc/PID/maps
//! before auditing begins.
//!
//! The hooks are attached first and the process enters the scope before its maps are
//! read, so every change it makes from then on is the kernel's to track. Changes made
//! while the maps are read and loaded show in the process's kernel edit count; the
//! load is then undone and done again. Regions the kernel already tracks (it adopted
//! the process at an mmap under `--all`/`--comm`/`--cgroup`) are left to it.

use anyhow::{Context, Result, anyhow};
use map_audit_common::region::{
    FileKey, MAP_ANONYMOUS, MAP_GROWSDOWN, MAP_PRIVATE, MAP_SHARED, MAP_STACK, REGION_HEAP, Region,
};
use procfs::process::{MMPermissions, MMapPath, MemoryMap, Process};

use crate::{
    kernel::region_table::RegionTable, pipeline::items::Item,
    pipeline::region_filter::RegionFilter, pipeline::region_mirror::TrackedRegion,
};

/// Reads of /proc/PID/maps before a process that keeps changing its mappings is
/// loaded as last read (and counted unsettled).
const ATTEMPTS: usize = 4;
/// The most of the stack's growth range tracked (as the kernel does at exec).
const MAX_STACK_RESERVE: u64 = 128 << 20;

/// Puts `pid` in scope and its mappings in the table; the item tells the pipeline.
pub fn load_running(table: &mut RegionTable, filter: &RegionFilter, pid: u32) -> Result<Item> {
    let process = Process::new(pid as i32).with_context(|| format!("pid {pid} is gone"))?;
    let comm = process.stat().map(|s| s.comm).unwrap_or_default();
    let stack_reserve = process
        .limits()
        .ok()
        .map(|l| match l.max_stack_size.soft_limit {
            procfs::process::LimitValue::Value(v) => v.min(MAX_STACK_RESERVE),
            procfs::process::LimitValue::Unlimited => MAX_STACK_RESERVE,
        })
        .unwrap_or(8 << 20);
    let scope = table.add_to_scope(pid)?;
    let gone = || anyhow!("pid {pid} is gone");
    let mut settled = false;
    let mut regions = Vec::new();
    for _ in 0..ATTEMPTS {
        let edits_before = table.scope_entry(pid).ok_or_else(gone)?.edits;
        let maps = process
            .maps()
            .with_context(|| format!("reading /proc/{pid}/maps failed"))?;
        let tracked = if edits_before == 0 {
            Vec::new()
        } else {
            table.regions_of(pid, scope.generation)
        };
        regions = maps
            .iter()
            .flat_map(|map| seed_regions(map, &tracked, stack_reserve))
            .map(|(start, end, map)| {
                let path = match &map.pathname {
                    MMapPath::Path(p) => Some(p.to_string_lossy().into()),
                    _ => None,
                };
                let region = Region {
                    start,
                    end,
                    file_offset: map.offset + start.saturating_sub(map.address.0),
                    id: table.new_region_id(),
                    prot: prot_bits(map.perms),
                    flags: mmap_flags(map),
                    generation: scope.generation,
                    path_filter: filter.path_state(path.as_deref()),
                    file: if map.inode == 0 {
                        FileKey::default()
                    } else {
                        FileKey::new(map.dev.0 as u32, map.dev.1 as u32, map.inode)
                    },
                };
                TrackedRegion { region, path }
            })
            .collect();
        for tracked in &regions {
            table.insert_if_absent(pid, &tracked.region);
        }
        if table.scope_entry(pid).ok_or_else(gone)?.edits == edits_before {
            settled = true;
            break;
        }
        for tracked in &regions {
            table.remove(pid, &tracked.region);
        }
    }
    if !settled {
        log::debug!("pid {pid} kept changing its mappings while it was loaded");
        for tracked in &regions {
            table.insert_if_absent(pid, &tracked.region);
        }
    }
    Ok(Item::Seed {
        pid,
        comm,
        generation: scope.generation,
        regions,
        settled,
    })
}

/// The parts of `map` to load: all of it but what the kernel tracks already; the
/// stack with the range it may grow into.
fn seed_regions<'a>(
    map: &'a MemoryMap,
    tracked: &[(u64, u64)],
    stack_reserve: u64,
) -> Vec<(u64, u64, &'a MemoryMap)> {
    let (mut start, end) = map.address;
    match map.pathname {
        MMapPath::Vsyscall => return Vec::new(), // a kernel address, not the process's
        MMapPath::Stack if end - start < stack_reserve => start = end - stack_reserve,
        _ => {}
    }
    let mut parts = vec![(start, end)];
    for &(t_start, t_end) in tracked {
        parts = parts
            .into_iter()
            .flat_map(|(s, e)| {
                if t_end <= s || e <= t_start {
                    vec![(s, e)]
                } else {
                    [(s, t_start.max(s)), (t_end.min(e), e)]
                        .into_iter()
                        .filter(|(a, b)| a < b)
                        .collect()
                }
            })
            .collect();
    }
    parts.into_iter().map(|(s, e)| (s, e, map)).collect()
}

/// Every pid now (for `--all`).
pub fn all_pids() -> Vec<u32> {
    procfs::process::all_processes()
        .map(|all| all.filter_map(Result::ok).map(|p| p.pid as u32).collect())
        .unwrap_or_default()
}

/// Pids with a thread whose comm is one of `comms` (not the agent itself): the kernel
/// adopts a process when any of its threads with a matching name maps memory.
pub fn pids_with_comm(comms: &[String]) -> Vec<u32> {
    let me = std::process::id() as i32;
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.filter_map(Result::ok)
        .filter(|p| p.pid != me)
        .filter(|p| {
            p.tasks().is_ok_and(|tasks| {
                tasks
                    .filter_map(Result::ok)
                    .any(|t| t.stat().is_ok_and(|s| comms.contains(&s.comm)))
            })
        })
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

fn mmap_flags(map: &MemoryMap) -> u32 {
    let sharing = if map.perms.contains(MMPermissions::SHARED) {
        MAP_SHARED
    } else {
        MAP_PRIVATE
    };
    match map.pathname {
        MMapPath::Path(_) => sharing,
        MMapPath::Heap => sharing | MAP_ANONYMOUS | REGION_HEAP,
        MMapPath::Stack => sharing | MAP_ANONYMOUS | MAP_GROWSDOWN | MAP_STACK,
        _ => sharing | MAP_ANONYMOUS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(start: u64, end: u64, pathname: MMapPath) -> MemoryMap {
        MemoryMap {
            address: (start, end),
            perms: MMPermissions::READ | MMPermissions::WRITE | MMPermissions::PRIVATE,
            offset: 0,
            dev: (0, 0),
            inode: 0,
            pathname,
            extension: Default::default(),
        }
    }

    #[test]
    fn kernel_tracked_ranges_are_left_out() {
        let m = map(0x10000, 0x20000, MMapPath::Anonymous);
        let parts: Vec<_> = seed_regions(&m, &[(0x14000, 0x16000)], 0)
            .into_iter()
            .map(|(s, e, _)| (s, e))
            .collect();
        assert_eq!(parts, [(0x10000, 0x14000), (0x16000, 0x20000)]);
        assert!(seed_regions(&m, &[(0x0, 0x30000)], 0).is_empty());
    }

    #[test]
    fn the_stack_covers_its_growth_range() {
        let m = map(0x7ff0_0000_0000, 0x7ff0_0002_1000, MMapPath::Stack);
        let parts = seed_regions(&m, &[], 8 << 20);
        assert_eq!(parts[0].0, 0x7ff0_0002_1000 - (8 << 20));
        assert_eq!(mmap_flags(&m) & MAP_STACK, MAP_STACK);
        assert_eq!(
            mmap_flags(&map(0, 1, MMapPath::Heap)) & REGION_HEAP,
            REGION_HEAP
        );
    }
}
