//! tracefs: mounting it when the host has not, and reading tracepoint `format` files so
//! field offsets are never hard-coded (distributions have moved them).

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow, bail};
use map_audit_common::config::TracepointOffsets;

const TRACEFS_PATHS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

/// The tracefs root, mounting it at /sys/kernel/tracing if no mount is there yet.
pub fn root() -> Result<PathBuf> {
    if let Some(found) = mounted_root() {
        return Ok(found);
    }
    let target = Path::new(TRACEFS_PATHS[0]);
    let mounted = nix::mount::mount(
        Some("tracefs"),
        target,
        Some("tracefs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    );
    if let Err(err) = mounted {
        // Another agent starting beside this one may be mounting it (EBUSY here): its
        // mount is as good as ours once it shows.
        for _ in 0..20 {
            if let Some(found) = mounted_root() {
                return Ok(found);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        return Err(err).with_context(|| {
            format!("tracefs is not mounted and mounting it at {} failed; mount it with `mount -t tracefs tracefs {}`", target.display(), target.display())
        });
    }
    Ok(target.to_path_buf())
}

/// The tracefs root if one is mounted (recognised by its `events` folder).
pub fn mounted_root() -> Option<PathBuf> {
    TRACEFS_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("events").is_dir())
}

/// Whether `category:name` exists under `root`.
pub fn tracepoint_exists(root: &Path, category: &str, name: &str) -> bool {
    root.join("events").join(category).join(name).is_dir()
}

/// Byte offset of `field` in the record of tracepoint `category:name`.
pub fn field_offset(root: &Path, category: &str, name: &str, field: &str) -> Result<u32> {
    let path = root.join("events").join(category).join(name).join("format");
    let text = fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {}: this kernel lacks the tracepoint {category}:{name}",
            path.display()
        )
    })?;
    parse_field_offset(&text, field).ok_or_else(|| {
        anyhow!(
            "tracepoint {category}:{name} has no field `{field}` in {}",
            path.display()
        )
    })
}

/// Finds `field`'s offset in a `format` file's text
/// (`field:unsigned long addr;\toffset:16;\tsize:8;\tsigned:0;`).
pub fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let mut parts = line.trim().split(';').map(str::trim);
        let declaration = parts.next()?.strip_prefix("field:")?;
        let name = declaration.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        parts.find_map(|p| p.strip_prefix("offset:")?.parse().ok())
    })
}

/// Offsets of every field the eBPF programs read.
pub fn tracepoint_offsets(root: &Path) -> Result<TracepointOffsets> {
    let mmap = |f| field_offset(root, "syscalls", "sys_enter_mmap", f);
    let munmap = |f| field_offset(root, "syscalls", "sys_enter_munmap", f);
    let mprotect = |f| field_offset(root, "syscalls", "sys_enter_mprotect", f);
    let pkey_mprotect = |f| field_offset(root, "syscalls", "sys_enter_pkey_mprotect", f);
    let mremap = |f| field_offset(root, "syscalls", "sys_enter_mremap", f);
    let msync = |f| field_offset(root, "syscalls", "sys_enter_msync", f);
    let cgroup_mkdir = |f| field_offset(root, "cgroup", "cgroup_mkdir", f);
    let offsets = TracepointOffsets {
        mmap_addr: mmap("addr")?,
        mmap_len: mmap("len")?,
        mmap_prot: mmap("prot")?,
        mmap_flags: mmap("flags")?,
        mmap_off: mmap("off")?,
        mmap_fd: mmap("fd")?,
        munmap_addr: munmap("addr")?,
        munmap_len: munmap("len")?,
        exit_ret: field_offset(root, "syscalls", "sys_exit_mmap", "ret")?,
        mprotect_start: mprotect("start")?,
        mprotect_len: mprotect("len")?,
        mprotect_prot: mprotect("prot")?,
        pkey_mprotect_start: pkey_mprotect("start")?,
        pkey_mprotect_len: pkey_mprotect("len")?,
        pkey_mprotect_prot: pkey_mprotect("prot")?,
        mremap_addr: mremap("addr")?,
        mremap_old_len: mremap("old_len")?,
        mremap_new_len: mremap("new_len")?,
        mremap_flags: mremap("flags")?,
        page_fault_address: field_offset(root, "exceptions", "page_fault_user", "address")
            .unwrap_or(0),
        page_fault_error_code: field_offset(root, "exceptions", "page_fault_user", "error_code")
            .unwrap_or(0),
        brk_brk: field_offset(root, "syscalls", "sys_enter_brk", "brk")?,
        msync_start: msync("start")?,
        msync_len: msync("len")?,
        msync_flags: msync("flags")?,
        // Needed only with `--container`, which checks that the tracepoint exists.
        cgroup_mkdir_root: cgroup_mkdir("root").unwrap_or(0),
        cgroup_mkdir_level: cgroup_mkdir("level").unwrap_or(0),
        cgroup_mkdir_id: cgroup_mkdir("id").unwrap_or(0),
        cgroup_mkdir_path: cgroup_mkdir("path").unwrap_or(0),
    };
    let munmap_ret = field_offset(root, "syscalls", "sys_exit_munmap", "ret")?;
    if munmap_ret != offsets.exit_ret {
        bail!(
            "sys_exit_mmap and sys_exit_munmap place `ret` differently ({} and {munmap_ret}); this kernel's syscall tracepoints are not supported",
            offsets.exit_ret
        );
    }
    Ok(offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYS_ENTER_MMAP: &str = "name: sys_enter_mmap
ID: 104
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:unsigned long addr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:unsigned long len;\toffset:24;\tsize:8;\tsigned:0;
\tfield:char comm[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:const char * filename;\toffset:56;\tsize:8;\tsigned:0;
";

    #[test]
    fn finds_fields_by_exact_name() {
        assert_eq!(parse_field_offset(SYS_ENTER_MMAP, "addr"), Some(16));
        assert_eq!(parse_field_offset(SYS_ENTER_MMAP, "len"), Some(24));
        assert_eq!(parse_field_offset(SYS_ENTER_MMAP, "comm"), Some(40));
        assert_eq!(parse_field_offset(SYS_ENTER_MMAP, "filename"), Some(56));
        assert_eq!(parse_field_offset(SYS_ENTER_MMAP, "__syscall_nr"), Some(8));
    }

    #[test]
    fn a_missing_tracepoint_is_one_sentence() {
        let root = std::env::temp_dir().join(format!("no-tracefs-{}", std::process::id()));
        std::fs::create_dir_all(root.join("events")).unwrap();
        let err = tracepoint_offsets(&root).unwrap_err().to_string();
        assert!(
            err.contains("this kernel lacks the tracepoint syscalls:sys_enter_mmap"),
            "{err}"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn missing_field_is_none() {
        assert_eq!(parse_field_offset(SYS_ENTER_MMAP, "ad"), None);
        assert_eq!(parse_field_offset("", "addr"), None);
    }
}
