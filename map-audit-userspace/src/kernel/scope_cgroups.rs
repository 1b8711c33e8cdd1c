//! The cgroups whose processes join the scope (`SCOPE_CGROUPS`, checked by the kernel at
//! exec and mmap of a process not yet in scope): `--cgroup`'s directory, and the
//! cgroups of the containers `--container` names and of the pods `--pod` names (the
//! pod's own cgroup, which holds its containers and their restarts), those at start
//! and those made later (the kernel reports each new cgroup; `cgroup_mkdir.rs`).

use anyhow::{Context, Result};
use aya::maps::{Array, HashMap, MapData};

use crate::{kernel::cgroup::Cgroup, output::containers, proc::cgroup_paths};

pub struct ScopeCgroups {
    ids: HashMap<MapData, u64, u32>,
    levels: Array<MapData, u32>,
    /// Bits of `levels[0]`: the levels some entry is at.
    level_mask: u32,
    /// `--container` id prefixes.
    prefixes: Vec<String>,
    /// `--pod` UIDs.
    pods: Vec<String>,
    /// Container and pod cgroups added.
    pub containers_scoped: u64,
}

impl ScopeCgroups {
    pub fn new(
        ids: HashMap<MapData, u64, u32>,
        levels: Array<MapData, u32>,
        prefixes: Vec<String>,
        pods: Vec<String>,
    ) -> Self {
        Self {
            ids,
            levels,
            level_mask: 0,
            prefixes,
            pods,
            containers_scoped: 0,
        }
    }

    /// Puts cgroup `id` (at `level` below the cgroup2 root) and its tree in the scope.
    pub fn add(&mut self, id: u64, level: u32) -> Result<()> {
        if level >= 16 {
            anyhow::bail!(
                "the cgroup is {level} levels deep; the kernel checks the first 16 levels"
            );
        }
        self.ids
            .insert(id, level, 0)
            .context("adding a cgroup to the scope failed (at most 4,096)")?;
        self.level_mask |= 1 << level;
        self.levels
            .set(0, self.level_mask, 0)
            .context("updating the scoped cgroup levels failed")
    }

    /// Whether cgroup `path` (below the cgroup2 root) is a container `--container`
    /// names, or the cgroup of a pod `--pod` names.
    fn is_scoped(&self, path: &str) -> bool {
        let container = containers::parse(path)
            .0
            .is_some_and(|c| self.prefixes.iter().any(|p| c.id.starts_with(p.as_str())));
        container || containers::pod_of_directory(path).is_some_and(|uid| self.pods.contains(&uid))
    }

    /// The cgroups of the named containers and pods that exist now, added; their
    /// directories are returned (their processes are loaded from /proc).
    pub fn add_running_containers(&mut self) -> Result<Vec<Cgroup>> {
        let mut found = Vec::new();
        let Some(root) = cgroup_paths::cgroup2_mount() else {
            return Ok(found);
        };
        let mut matching = Vec::new();
        cgroup_paths::walk(&root, |dir, path| {
            let scoped = self.is_scoped(path);
            if scoped {
                matching.push(dir.to_path_buf());
            }
            // A container's sub-cgroups are in its tree already.
            !scoped
        });
        for dir in matching {
            let cgroup = Cgroup::resolve(&dir)?;
            self.add(cgroup.id, cgroup.level)?;
            self.containers_scoped += 1;
            found.push(cgroup);
        }
        Ok(found)
    }

    /// A cgroup was made (`hierarchy` 0 is cgroup v2): added if it is a named
    /// container's or pod's.
    pub fn made(&mut self, hierarchy: u32, id: u64, level: u32, path: &str) {
        if hierarchy != 0 || !self.is_scoped(path) {
            return;
        }
        match self.add(id, level) {
            Ok(()) => {
                self.containers_scoped += 1;
                log::debug!("container cgroup {path} (id {id}) joins the scope");
            }
            Err(err) => log::warn!("container cgroup {path} not scoped: {err:#}"),
        }
    }
}
