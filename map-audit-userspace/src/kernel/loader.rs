//! Loads the embedded eBPF object with this run's configuration and attaches its hooks.

use anyhow::{Context, Result};
use aya::{Ebpf, EbpfLoader, programs::TracePoint};
use map_audit_common::{
    config::{AgentConfig, KernelOffsets, OFFSET_ABSENT, TracepointOffsets},
    map_names,
};

use crate::{
    kernel::fault_hooks::{self, FaultHook},
    kernel::feature_probes::ProgramObject,
    kernel::kernel_btf::KernelBtf,
    kernel::programs::{AttachedHook, attach_raw, program},
};

/// The eBPF objects built by `cargo xtask build-ebpf`, embedded at build time: for
/// 5.17+, and for older kernels (`feature_probes::ProgramObject`).
pub(crate) static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("MAP_AUDIT_EBPF_OBJECT"));
static EBPF_OBJECT_5_10: &[u8] = aya::include_bytes_aligned!(env!("MAP_AUDIT_EBPF_OBJECT_5_10"));

impl ProgramObject {
    fn bytes(self) -> &'static [u8] {
        match self {
            Self::Linux5_17 => EBPF_OBJECT,
            Self::Linux5_10 => EBPF_OBJECT_5_10,
        }
    }
}

/// What the loader needs from the command line and the kernel.
pub struct LoadOptions {
    pub object: ProgramObject,
    pub offsets: TracepointOffsets,
    pub kernel_offsets: KernelOffsets,
    pub config: AgentConfig,
    /// Ring buffer size in bytes (a power of two, a multiple of the page size).
    pub ringbuf_bytes: u32,
    /// Entries of the region table (each region takes one per aligned block).
    pub region_table_entries: u32,
    /// Rows of the unwind tables.
    pub unwind_rows: u32,
}

/// Loads the object; maps are created and globals set, nothing attached yet.
pub fn load(options: &LoadOptions) -> Result<Ebpf> {
    EbpfLoader::new()
        .override_global(map_names::TRACEPOINT_OFFSETS, &options.offsets, true)
        .override_global(map_names::AGENT_CONFIG, &options.config, true)
        .override_global(map_names::KERNEL_OFFSETS, &options.kernel_offsets, true)
        .map_max_entries(map_names::EVENTS, options.ringbuf_bytes)
        .map_max_entries(map_names::REGIONS, options.region_table_entries)
        .map_max_entries(map_names::UNWIND_ROWS, options.unwind_rows)
        .load(options.object.bytes())
        .context("loading the eBPF object failed; run as root (or with CAP_BPF and CAP_PERFMON) on Linux 5.8+ with BTF; in a container, its seccomp profile must allow bpf() (older default profiles allow it only with CAP_SYS_ADMIN: use an unconfined profile)")
}

/// (role, program, category, tracepoint): the per-syscall and process tracepoints.
const TRACEPOINTS: [(&str, &str, &str, &str); 16] = [
    ("mmap", "sys_enter_mmap", "syscalls", "sys_enter_mmap"),
    ("mmap", "sys_exit_mmap", "syscalls", "sys_exit_mmap"),
    ("munmap", "sys_enter_munmap", "syscalls", "sys_enter_munmap"),
    ("munmap", "sys_exit_munmap", "syscalls", "sys_exit_munmap"),
    ("msync", "sys_enter_msync", "syscalls", "sys_enter_msync"),
    ("msync", "sys_exit_msync", "syscalls", "sys_exit_msync"),
    (
        "mprotect",
        "sys_enter_mprotect",
        "syscalls",
        "sys_enter_mprotect",
    ),
    (
        "mprotect",
        "sys_exit_mprotect",
        "syscalls",
        "sys_exit_mprotect",
    ),
    (
        "mprotect",
        "sys_enter_pkey_mprotect",
        "syscalls",
        "sys_enter_pkey_mprotect",
    ),
    (
        "mprotect",
        "sys_exit_mprotect",
        "syscalls",
        "sys_exit_pkey_mprotect",
    ),
    ("mremap", "sys_enter_mremap", "syscalls", "sys_enter_mremap"),
    ("mremap", "sys_exit_mremap", "syscalls", "sys_exit_mremap"),
    ("brk", "sys_enter_brk", "syscalls", "sys_enter_brk"),
    ("brk", "sys_exit_brk", "syscalls", "sys_exit_brk"),
    ("exec", "sched_process_exec", "sched", "sched_process_exec"),
    ("exit", "sched_process_exit", "sched", "sched_process_exit"),
];

/// The exec program: the object for older kernels reads the VMA list, except where it
/// runs on a kernel without one (6.1+, `--ebpf-object linux5-10`).
pub fn exec_program(object: ProgramObject, offsets: &KernelOffsets) -> &'static str {
    if object == ProgramObject::Linux5_10 && offsets.mm_mmap == OFFSET_ABSENT {
        "sched_process_exec_find_vma"
    } else {
        "sched_process_exec"
    }
}

/// Attaches every program (`fault_hook: None`: all but the fault hooks, for `watch`);
/// links live as long as `ebpf`.
pub fn attach(
    ebpf: &mut Ebpf,
    exec_program: &str,
    fault_hook: Option<FaultHook>,
) -> Result<Vec<AttachedHook>> {
    let mut hooks = Vec::new();
    for (role, name, category, point) in TRACEPOINTS {
        let name = if role == "exec" { exec_program } else { name };
        let program: &mut TracePoint = program(ebpf, name)?.try_into()?;
        log::debug!("attaching {name} to {category}:{point}");
        // One program serves two tracepoints (the mprotect and pkey_mprotect exits).
        if program.fd().is_err() {
            program
                .load()
                .with_context(|| format!("the kernel rejected the {name} program"))?;
        }
        program.attach(category, point).with_context(|| {
            format!("attaching to tracepoint {category}:{point} failed; check that tracefs is mounted and the kernel has CONFIG_FTRACE_SYSCALLS")
        })?;
        hooks.push(AttachedHook {
            role,
            hook: format!("tracepoint:{category}:{point}"),
            reason: "the stable hook for this event; field offsets read from tracefs".into(),
        });
    }
    attach_raw(ebpf, "sched_process_fork", "sched_process_fork")?;
    hooks.push(AttachedHook {
        role: "fork",
        hook: "raw_tracepoint:sched:sched_process_fork".into(),
        reason: "gives the child task, so new threads are told apart from new processes".into(),
    });
    if let Some(fault_hook) = fault_hook {
        hooks.extend(fault_hooks::attach(ebpf, fault_hook)?);
    }
    Ok(hooks)
}

/// `--container`: the kernel reports each cgroup made, so containers started later
/// join the scope.
pub fn attach_cgroup_mkdir(ebpf: &mut Ebpf) -> Result<AttachedHook> {
    let program: &mut TracePoint = program(ebpf, "cgroup_mkdir")?.try_into()?;
    program
        .load()
        .context("the kernel rejected the cgroup_mkdir program")?;
    program.attach("cgroup", "cgroup_mkdir").context(
        "attaching to tracepoint cgroup:cgroup_mkdir failed; --container needs it (tracefs mounted, Linux 4.19+)",
    )?;
    Ok(AttachedHook {
        role: "cgroup",
        hook: "tracepoint:cgroup:cgroup_mkdir".into(),
        reason: "--container: containers started after the agent join the scope".into(),
    })
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK.
pub fn raise_memlock_limit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!("raising RLIMIT_MEMLOCK failed; fine on 5.11+ (memcg accounting)");
    }
}

/// The struct member offsets the programs need, from the kernel's BTF.
pub fn kernel_offsets(btf: &KernelBtf) -> Result<KernelOffsets> {
    let member = |s: &str, m: &str| btf.member_offset(s, m);
    let f_path = member("file", "f_path")?;
    Ok(KernelOffsets {
        task_tgid: member("task_struct", "tgid")?,
        task_mm: member("task_struct", "mm")?,
        mm_exe_file: member("mm_struct", "exe_file")?,
        mm_start_code: member("mm_struct", "start_code")?,
        mm_end_code: member("mm_struct", "end_code")?,
        task_files: member("task_struct", "files")?,
        files_fdt: member("files_struct", "fdt")?,
        fdtable_max_fds: member("fdtable", "max_fds")?,
        fdtable_fd: member("fdtable", "fd")?,
        file_dentry: f_path + member("path", "dentry")?,
        file_vfsmount: f_path + member("path", "mnt")?,
        vfsmount_mnt_root: member("vfsmount", "mnt_root")?,
        mount_mnt: member("mount", "mnt")?,
        mount_mnt_id: member("mount", "mnt_id")?,
        dentry_parent: member("dentry", "d_parent")?,
        dentry_name: member("dentry", "d_name")? + member("qstr", "name")?,
        dentry_name_len: member("dentry", "d_name")? + member("qstr", "len")?,
        task_signal: member("task_struct", "signal")?,
        signal_live: member("signal_struct", "live")?,
        signal_rlim: member("signal_struct", "rlim")?,
        mm_start_data: member("mm_struct", "start_data")?,
        mm_end_data: member("mm_struct", "end_data")?,
        mm_start_brk: member("mm_struct", "start_brk")?,
        mm_start_stack: member("mm_struct", "start_stack")?,
        mm_saved_auxv: member("mm_struct", "saved_auxv")?,
        vma_vm_start: member("vm_area_struct", "vm_start")?,
        vma_vm_end: member("vm_area_struct", "vm_end")?,
        vma_vm_flags: member("vm_area_struct", "vm_flags")?,
        vma_vm_pgoff: member("vm_area_struct", "vm_pgoff")?,
        vma_vm_file: member("vm_area_struct", "vm_file")?,
        file_inode: member("file", "f_inode")?,
        inode_ino: member("inode", "i_ino")?,
        inode_sb: member("inode", "i_sb")?,
        sb_dev: member("super_block", "s_dev")?,
        task_stack: member("task_struct", "stack")?,
        mm_mmap: member("mm_struct", "mmap").unwrap_or(OFFSET_ABSENT),
        vma_vm_next: member("vm_area_struct", "vm_next").unwrap_or(OFFSET_ABSENT),
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection, ObjectSymbol};

    use super::*;

    /// The maps the agent names are the maps the object has: a map renamed or added on
    /// one side only fails here, not at load time as root.
    #[test]
    fn the_objects_maps_are_the_shared_names() {
        for bytes in [EBPF_OBJECT, EBPF_OBJECT_5_10] {
            maps_are_the_shared_names(bytes);
        }
    }

    fn maps_are_the_shared_names(bytes: &[u8]) {
        let object = object::File::parse(bytes).unwrap();
        let maps = object.section_by_name("maps").unwrap().index();
        let mut found: Vec<&str> = object
            .symbols()
            .filter(|symbol| symbol.section_index() == Some(maps))
            .map(|symbol| symbol.name().unwrap())
            .collect();
        found.sort_unstable();
        let mut named = map_names::MAPS.to_vec();
        named.sort_unstable();
        assert_eq!(found, named);
        for global in map_names::GLOBALS {
            assert!(
                object.symbols().any(|symbol| symbol.name() == Ok(global)),
                "{global}"
            );
        }
    }
}
