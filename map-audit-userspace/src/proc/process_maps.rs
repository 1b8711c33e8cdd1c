//! Snapshots of /proc/PID/maps, taken by the reader as soon as a process shows up and
//! whenever it maps a file, so that region paths and stack symbols still resolve after
//! the process has exited (short-lived processes are the norm, not the exception).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use procfs::process::{MMPermissions, MMapPath, Process};

use super::module_files::{self, ModuleFile};

/// One line of /proc/PID/maps.
#[derive(Debug, Clone)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    /// Backing file, if any, as the process names it.
    pub path: Option<PathBuf>,
    pub executable: bool,
    /// The file, open, when the process is in another mount namespace (where `path`
    /// names nothing on the host): see `module_files`.
    pub file: Option<Arc<ModuleFile>>,
}

impl MapEntry {
    /// Where the agent reads the backing file.
    pub fn read_path(&self) -> Option<&Path> {
        match &self.file {
            Some(file) => Some(&file.read_path),
            None => self.path.as_deref(),
        }
    }
}

/// A process's memory map at one moment, sorted by address.
#[derive(Debug, Default)]
pub struct ProcessMaps {
    pub exe: Option<String>,
    entries: Vec<MapEntry>,
}

impl ProcessMaps {
    /// Reads `pid`'s map; `None` when the process is gone or unreadable, or has no
    /// mappings left (an exited process not yet reaped).
    pub fn read(pid: u32) -> Option<Self> {
        let process = Process::new(pid as i32).ok()?;
        let maps = match process.maps() {
            Ok(maps) => maps,
            Err(err) => {
                log::debug!("reading the maps of pid {pid} failed: {err}");
                return None;
            }
        };
        let foreign = module_files::in_other_mount_namespace(pid);
        let mut entries: Vec<MapEntry> = maps
            .into_iter()
            .map(|m| {
                let executable = m.perms.contains(MMPermissions::EXECUTE);
                let (start, end) = m.address;
                let file = match &m.pathname {
                    MMapPath::Path(p) if foreign && executable => {
                        module_files::open(pid, start, end, p)
                    }
                    _ => None,
                };
                MapEntry {
                    start,
                    end,
                    offset: m.offset,
                    path: match m.pathname {
                        MMapPath::Path(p) => Some(p),
                        MMapPath::Vdso => crate::proc::vdso_image::path().map(Path::to_path_buf),
                        _ => None,
                    },
                    executable,
                    file,
                }
            })
            .collect();
        if entries.is_empty() {
            return None;
        }
        entries.sort_by_key(|e| e.start);
        let exe = process.exe().ok().map(|p| p.to_string_lossy().into_owned());
        Some(Self { exe, entries })
    }

    /// This (newer) snapshot plus the entries of `older` it does not overlap. A refresh
    /// runs later than the records it serves: mappings gone by then (unmapped, or the
    /// process moved on) must still resolve the addresses those records carry.
    fn merged_with(mut self, older: &ProcessMaps) -> Self {
        let kept: Vec<MapEntry> = older
            .entries
            .iter()
            .filter(|old| {
                !self
                    .entries
                    .iter()
                    .any(|new| new.start < old.end && old.start < new.end)
            })
            .cloned()
            .collect();
        self.entries.extend(kept);
        self.entries.sort_by_key(|e| e.start);
        self
    }

    /// The entry containing `address`.
    pub fn find(&self, address: u64) -> Option<&MapEntry> {
        let index = self.entries.partition_point(|e| e.start <= address);
        let entry = self.entries.get(index.checked_sub(1)?)?;
        (address < entry.end).then_some(entry)
    }

    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// The file mapped at `address`.
    pub fn path_at(&self, address: u64) -> Option<String> {
        Some(
            self.find(address)?
                .path
                .as_ref()?
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// The reader's latest snapshot per process.
#[derive(Default)]
pub struct Snapshots {
    by_pid: HashMap<u32, Arc<ProcessMaps>>,
}

impl Snapshots {
    /// A snapshot of `pid`: the cached one unless `refresh`, or a fresh one merged
    /// over the cached one. A process already gone keeps its last snapshot (or an
    /// empty one).
    pub fn get(&mut self, pid: u32, refresh: bool) -> (Arc<ProcessMaps>, bool) {
        if !refresh && let Some(maps) = self.by_pid.get(&pid) {
            return (maps.clone(), false);
        }
        match ProcessMaps::read(pid) {
            Some(maps) => {
                let maps = match self.by_pid.get(&pid) {
                    Some(older) => maps.merged_with(older),
                    None => maps,
                };
                let maps = Arc::new(maps);
                self.by_pid.insert(pid, maps.clone());
                (maps, true)
            }
            None => {
                let maps = self.by_pid.entry(pid).or_default().clone();
                (maps, false)
            }
        }
    }

    /// A forked child starts with its parent's memory map (until it maps its own).
    pub fn inherit(&mut self, child: u32, parent: u32) -> Option<Arc<ProcessMaps>> {
        let maps = self.by_pid.get(&parent)?.clone();
        self.by_pid.insert(child, maps.clone());
        Some(maps)
    }

    /// Forgets `pid` (it exited, or exec'd: its old image's mappings are gone).
    pub fn forget(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(start: u64, end: u64) -> MapEntry {
        MapEntry {
            start,
            end,
            offset: 0,
            path: None,
            executable: true,
            file: None,
        }
    }

    #[test]
    fn a_refresh_keeps_older_mappings_it_does_not_overlap() {
        let older = ProcessMaps {
            exe: None,
            entries: vec![entry(0x1000, 0x3000), entry(0x8000, 0x9000)],
        };
        let newer = ProcessMaps {
            exe: None,
            entries: vec![entry(0x2000, 0x4000), entry(0x5000, 0x6000)],
        };
        let merged = newer.merged_with(&older);
        let ranges: Vec<_> = merged.entries.iter().map(|e| (e.start, e.end)).collect();
        assert_eq!(
            ranges,
            [(0x2000, 0x4000), (0x5000, 0x6000), (0x8000, 0x9000)]
        );
    }

    #[test]
    fn finds_this_process_code() {
        let maps = ProcessMaps::read(std::process::id()).expect("own maps are readable");
        let code = finds_this_process_code as *const () as u64;
        let entry = maps.find(code).expect("own code is mapped");
        assert!(entry.executable);
        assert!(entry.path.is_some());
        assert!(maps.find(0).is_none());
    }
}
