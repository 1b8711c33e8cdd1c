//! Executable files of processes in another mount namespace (containers), held open.
//!
//! Their paths in /proc/PID/maps are the container's: on the host they name nothing, or
//! another file. So while the process lives, each executable mapping's file is opened
//! through `/proc/PID/map_files/` (the very file the process mapped; needs
//! CAP_SYS_ADMIN) and read through `/proc/self/fd/N` for as long as a snapshot that
//! names it is kept. Processes in the agent's own namespace keep plain paths: no fd.
//!
//! Cost: one `stat` of `/proc/PID/ns/mnt` per snapshot, one `open` per executable
//! mapping of a foreign process, and one fd per such file while its snapshot lives.

use std::{
    fs::File,
    os::{fd::AsRawFd, unix::fs::MetadataExt},
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

/// An executable file of another mount namespace, open.
#[derive(Debug)]
pub struct ModuleFile {
    /// Keeps `read_path` naming this file.
    _file: File,
    /// `/proc/self/fd/N`: where the agent reads it.
    pub read_path: PathBuf,
    /// (device, inode): what tells two files of one path apart (two containers' images).
    pub identity: (u64, u64),
}

/// Whether `pid` lives in another mount namespace than the agent (`false` when either
/// cannot be read: its paths are then used as they are).
pub fn in_other_mount_namespace(pid: u32) -> bool {
    static OWN: OnceLock<Option<u64>> = OnceLock::new();
    let namespace = |path: &str| std::fs::metadata(path).ok().map(|m| m.ino());
    let own = *OWN.get_or_init(|| namespace("/proc/self/ns/mnt"));
    match (own, namespace(&format!("/proc/{pid}/ns/mnt"))) {
        (Some(own), Some(theirs)) => own != theirs,
        _ => false,
    }
}

/// Opens the file `pid` maps at `[start, end)`; `path` (the process's own name for it)
/// under `/proc/PID/root` when the mapping's entry cannot be opened.
pub fn open(pid: u32, start: u64, end: u64, path: &Path) -> Option<Arc<ModuleFile>> {
    let in_root = Path::new(&format!("/proc/{pid}/root")).join(path.strip_prefix("/").ok()?);
    let file = File::open(format!("/proc/{pid}/map_files/{start:x}-{end:x}"))
        .or_else(|_| File::open(in_root))
        .map_err(|err| log::debug!("opening {} of pid {pid} failed: {err}", path.display()))
        .ok()?;
    let meta = file.metadata().ok()?;
    Some(Arc::new(ModuleFile {
        read_path: PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd())),
        identity: (meta.dev(), meta.ino()),
        _file: file,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_in_its_own_namespace() {
        assert!(!in_other_mount_namespace(std::process::id()));
        assert!(!in_other_mount_namespace(u32::MAX), "no such process");
    }

    #[test]
    fn opens_this_process_code_through_its_mapping() {
        let maps = procfs::process::Process::myself().unwrap().maps().unwrap();
        let code = maps
            .iter()
            .find(|m| {
                m.perms.contains(procfs::process::MMPermissions::EXECUTE)
                    && matches!(m.pathname, procfs::process::MMapPath::Path(_))
            })
            .unwrap();
        let procfs::process::MMapPath::Path(path) = &code.pathname else {
            unreachable!()
        };
        let file = open(std::process::id(), code.address.0, code.address.1, path)
            .expect("own mapping opens");
        let on_disk = std::fs::metadata(path).unwrap();
        assert_eq!(file.identity, (on_disk.dev(), on_disk.ino()));
        assert_eq!(
            std::fs::metadata(&file.read_path).unwrap().ino(),
            on_disk.ino()
        );
    }
}
