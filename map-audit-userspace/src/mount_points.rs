//! Mount ids to mount points, from /proc/self/mountinfo (the agent's mount namespace),
//! to turn the kernel's (mount id, dentry names) into a path.

use std::collections::HashMap;

use procfs::process::Process;

#[derive(Default)]
pub struct MountPoints {
    by_id: HashMap<u32, String>,
}

impl MountPoints {
    /// The mount point of `mount_id`, re-reading mountinfo once if it is new.
    pub fn get(&mut self, mount_id: u32) -> Option<&str> {
        if !self.by_id.contains_key(&mount_id) {
            self.reload();
        }
        self.by_id.get(&mount_id).map(String::as_str)
    }

    fn reload(&mut self) {
        match Process::myself().and_then(|p| p.mountinfo()) {
            Ok(infos) => {
                self.by_id = infos
                    .into_iter()
                    .map(|m| {
                        (
                            m.mnt_id as u32,
                            m.mount_point.to_string_lossy().into_owned(),
                        )
                    })
                    .collect();
            }
            Err(err) => log::warn!("reading /proc/self/mountinfo failed: {err}"),
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
        assert_eq!(mounts.get(root_id as u32), Some("/"));
    }
}
