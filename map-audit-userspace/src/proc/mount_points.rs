//! Mount ids to mount points, to turn the kernel's (mount id, dentry names) into a
//! path. Mount ids are unique across mount namespaces, so each is looked up where it
//! lives: in the agent's own /proc/self/mountinfo, else in the mapping process's
//! /proc/PID/mountinfo (a container, or the host when the agent runs in a private mount
//! namespace), which gives the path as that process names it. The ring-buffer reader
//! does the lookup, while the mapping process still exists.

use std::collections::HashMap;

use procfs::process::Process;

#[derive(Default)]
pub struct MountPoints {
    by_id: HashMap<u32, String>,
}

impl MountPoints {
    /// The mount point of `mount_id` for process `pid`, re-reading the agent's and then
    /// `pid`'s mountinfo once if it is new.
    pub fn get(&mut self, pid: u32, mount_id: u32) -> Option<&str> {
        if !self.by_id.contains_key(&mount_id) {
            self.load(Process::myself(), "self");
        }
        if !self.by_id.contains_key(&mount_id) {
            self.load(Process::new(pid as i32), &pid.to_string());
        }
        self.by_id.get(&mount_id).map(String::as_str)
    }

    fn load(&mut self, process: procfs::ProcResult<Process>, which: &str) {
        match process.and_then(|p| p.mountinfo()) {
            Ok(infos) => self.by_id.extend(infos.into_iter().map(|m| {
                (
                    m.mnt_id as u32,
                    m.mount_point.to_string_lossy().into_owned(),
                )
            })),
            Err(err) => log::debug!("reading /proc/{which}/mountinfo failed: {err}"),
        }
    }
}

/// Joins a mount point and dentry names (leaf first) into a path. A mount the agent
/// cannot see (an internal one, e.g. memfd) gives the names from its root.
pub fn join(mount_point: Option<&str>, names_leaf_first: &[&str]) -> String {
    let mut path = mount_point.unwrap_or("").trim_end_matches('/').to_string();
    for name in names_leaf_first.iter().rev() {
        path.push('/');
        path.push_str(name);
    }
    if path.is_empty() {
        path.push('/');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_mount_point_and_names() {
        assert_eq!(join(Some("/"), &["shared.dat", "tmp"]), "/tmp/shared.dat");
        assert_eq!(join(Some("/dev/shm"), &["seg"]), "/dev/shm/seg");
        assert_eq!(join(None, &["memfd:jit"]), "/memfd:jit");
        assert_eq!(join(Some("/"), &[]), "/");
    }

    #[test]
    fn knows_the_root_mount() {
        let mut mounts = MountPoints::default();
        let root_id = Process::myself()
            .unwrap()
            .mountinfo()
            .unwrap()
            .into_iter()
            .find(|m| m.mount_point.as_os_str() == "/")
            .unwrap()
            .mnt_id;
        assert_eq!(mounts.get(std::process::id(), root_id as u32), Some("/"));
        assert_eq!(mounts.get(std::process::id(), u32::MAX), None);
    }
}
