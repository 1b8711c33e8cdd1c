//! Cgroup v2 ids (what the kernel puts in every record) to paths, and the container
//! and pod each path names (`output/containers.rs`).
//!
//! An id is its directory's inode number in the cgroup2 mount. A new id is looked up
//! in the process's `/proc/PID/cgroup` first (one small read, checked against the
//! directory's inode); when the process is gone or has moved, the whole cgroup2 tree is
//! walked, at most once a second (a few ms on a host with a thousand cgroups). Every id
//! is resolved once and cached. A record whose id neither names (its cgroup is gone
//! too, or the tree was walked less than a second before) has a null path, counted
//! (`cgroup_paths_unresolved`).

use std::{
    collections::HashMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use schemars::JsonSchema;
use serde::Serialize;

use crate::output::containers::{self, Container, Kubernetes};

/// Walks of the whole tree at most this often.
const WALK_INTERVAL: Duration = Duration::from_secs(1);

/// What events say of a process's cgroup.
#[derive(Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct CgroupInfo {
    /// The cgroup v2 id (`bpf_get_current_cgroup_id`).
    pub id: u64,
    /// Its path below the cgroup2 mount, as `/proc/PID/cgroup` gives it; null when the
    /// cgroup was gone before the agent could name it.
    pub path: Option<Arc<str>>,
    #[serde(skip)]
    pub container: Option<Container>,
    #[serde(skip)]
    pub kubernetes: Option<Kubernetes>,
}

pub struct CgroupPaths {
    /// The cgroup2 mount (`None`: no cgroup v2, ids are not resolved).
    root: Option<PathBuf>,
    by_id: HashMap<u64, Arc<CgroupInfo>>,
    last_walk: Option<Instant>,
    pub unresolved: u64,
}

impl CgroupPaths {
    pub fn new() -> Self {
        Self::with_root(cgroup2_mount())
    }

    fn with_root(root: Option<PathBuf>) -> Self {
        Self {
            root,
            by_id: HashMap::new(),
            last_walk: None,
            unresolved: 0,
        }
    }

    /// What is known of cgroup `id`, a cgroup of process `pid` (`None` for id 0: a
    /// record the agent made itself). A null path is counted, each time.
    pub fn get(&mut self, id: u64, pid: u32) -> Option<Arc<CgroupInfo>> {
        if id == 0 {
            return None;
        }
        let info = match self.by_id.get(&id) {
            Some(info) => info.clone(),
            None => self.resolve(id, pid),
        };
        if info.path.is_none() {
            self.unresolved += 1;
        }
        Some(info)
    }

    /// The cgroup `pid` is in now, read from /proc (a process whose records have not
    /// said yet: one loaded at start).
    pub fn of_process(&mut self, pid: u32) -> Option<Arc<CgroupInfo>> {
        let root = self.root.as_ref()?;
        let path = own_path(pid)?;
        let id = dir_id(&root.join(path.trim_start_matches('/')))?;
        self.get(id, pid)
    }

    fn resolve(&mut self, id: u64, pid: u32) -> Arc<CgroupInfo> {
        let (path, final_answer) = match self.path_in_proc(id, pid) {
            Some(path) => (Some(path), true),
            None => self.path_by_walking(id),
        };
        let (container, kubernetes) = path.as_deref().map(containers::parse).unwrap_or_default();
        let info = Arc::new(CgroupInfo {
            id,
            path: path.map(Arc::from),
            container,
            kubernetes,
        });
        if final_answer {
            self.by_id.insert(id, info.clone());
        }
        info
    }

    /// The v2 line of `/proc/PID/cgroup`, if its directory is `id`.
    fn path_in_proc(&self, id: u64, pid: u32) -> Option<String> {
        let root = self.root.as_ref()?;
        let path = own_path(pid)?;
        (dir_id(&root.join(path.trim_start_matches('/'))) == Some(id)).then_some(path)
    }

    /// Walks the tree (unless it was walked less than a second ago) and caches every
    /// directory whose id is new. Returns `id`'s path if the walk found it, and whether
    /// that is final (there was a walk).
    fn path_by_walking(&mut self, id: u64) -> (Option<String>, bool) {
        let Some(root) = self.root.clone() else {
            return (None, true);
        };
        if self.last_walk.is_some_and(|t| t.elapsed() < WALK_INTERVAL) {
            return (None, false);
        }
        self.last_walk = Some(Instant::now());
        let mut found = None;
        walk(&root, |dir, path| {
            let Some(dir_id) = dir_id(dir) else {
                return true;
            };
            if dir_id == id {
                found = Some(path.to_string());
            } else {
                self.by_id.entry(dir_id).or_insert_with(|| {
                    let (container, kubernetes) = containers::parse(path);
                    Arc::new(CgroupInfo {
                        id: dir_id,
                        path: Some(path.into()),
                        container,
                        kubernetes,
                    })
                });
            }
            true
        });
        (found, true)
    }
}

/// Visits `root` and the directories below it with their paths relative to `root`
/// (`"/"`, `"/system.slice"`, ...); `visit` returns whether to go below a directory.
pub(crate) fn walk(root: &Path, mut visit: impl FnMut(&Path, &str) -> bool) {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let relative = Path::new("/").join(dir.strip_prefix(root).unwrap_or(&dir));
        if !visit(&dir, &relative.to_string_lossy()) {
            continue;
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            dirs.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
}

/// The cgroup v2 line of `/proc/PID/cgroup`.
fn own_path(pid: u32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

fn dir_id(dir: &Path) -> Option<u64> {
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// The cgroup2 mount point (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on a hybrid
/// layout).
pub(crate) fn cgroup2_mount() -> Option<PathBuf> {
    let mounts = procfs::process::Process::myself().ok()?.mountinfo().ok()?;
    mounts
        .into_iter()
        .filter(|m| m.fs_type == "cgroup2")
        .map(|m| m.mount_point)
        .min_by_key(|p| p.components().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_cgroup_resolves_path_in_proc() {
        let mut paths = CgroupPaths::new();
        let Some(root) = paths.root.clone() else {
            panic!("no cgroup2 mount: the agent needs cgroup v2 for cgroup ids");
        };
        let text = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let own = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap()
            .to_string();
        let id = dir_id(&root.join(own.trim_start_matches('/'))).unwrap();
        let info = paths.get(id, std::process::id()).unwrap();
        assert_eq!(info.path.as_deref(), Some(own.as_str()));
        assert!(paths.get(0, 1).is_none(), "id 0 is no cgroup");
    }

    #[test]
    fn an_id_of_another_process_is_found_by_walking() {
        let mut paths = CgroupPaths::new();
        let root = paths.root.clone().expect("a cgroup2 mount");
        let root_id = dir_id(&root).unwrap();
        // Not this process's cgroup unless it runs in the root: the walk finds it.
        let info = paths.get(root_id, u32::MAX).unwrap();
        assert_eq!(info.path.as_deref(), Some("/"));
        assert_eq!(paths.unresolved, 0);
        let gone = paths.get(u64::MAX, u32::MAX).unwrap();
        assert_eq!(gone.path, None, "an id no directory has");
        assert_eq!(paths.unresolved, 1);
    }
}
