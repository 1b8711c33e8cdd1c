//! `--cgroup PATH`: a cgroup v2 directory's id and level (what the kernel compares with
//! `bpf_get_current_ancestor_cgroup_id`) and the processes in its tree now.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use procfs::process::Process;

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

pub struct Cgroup {
    pub path: PathBuf,
    /// The directory's inode number: its cgroup id.
    pub id: u64,
    /// Depth below the cgroup v2 root (the root is 0).
    pub level: u32,
}

impl Cgroup {
    pub fn resolve(path: &Path) -> Result<Self> {
        let path = path
            .canonicalize()
            .with_context(|| format!("the cgroup {} does not exist", path.display()))?;
        let fs = nix::sys::statfs::statfs(&path)
            .with_context(|| format!("cannot stat {}", path.display()))?;
        if fs.filesystem_type().0 as i64 != CGROUP2_SUPER_MAGIC {
            bail!(
                "{} is not a cgroup v2 directory (cgroup v1 is not supported); give a path under the cgroup2 mount",
                path.display()
            );
        }
        let root = cgroup2_root(&path)?;
        let level = path
            .strip_prefix(&root)
            .map(|rest| rest.components().count() as u32)
            .unwrap_or(0);
        let id = std::fs::metadata(&path)?.ino();
        Ok(Self { path, id, level })
    }

    /// Pids in this cgroup and its descendants now.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        crate::proc::cgroup_paths::walk(&self.path, |dir, _| {
            if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
                pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
            }
            true
        });
        pids
    }
}

/// The cgroup2 mount point that contains `path`.
fn cgroup2_root(path: &Path) -> Result<PathBuf> {
    let mounts = Process::myself()?.mountinfo()?;
    mounts
        .into_iter()
        .filter(|m| m.fs_type == "cgroup2" && path.starts_with(&m.mount_point))
        .map(|m| m.mount_point)
        .max_by_key(|p| p.components().count())
        .context("no cgroup2 mount contains that path")
}
