//! Start-up configuration the agent writes into the eBPF object's read-only globals.

use crate::region_filter::RegionFilterRule;

/// Byte offsets of the syscall tracepoint fields the programs read. They are read from
/// the tracepoints' `format` files at start-up, never hard-coded: distributions have
/// moved them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    pub mmap_addr: u32,
    pub mmap_len: u32,
    pub mmap_prot: u32,
    pub mmap_flags: u32,
    pub mmap_off: u32,
    pub munmap_addr: u32,
    pub munmap_len: u32,
    /// `ret` of `sys_exit_*` (the same record layout for every syscall).
    pub exit_ret: u32,
    pub mmap_fd: u32,
    pub mprotect_start: u32,
    pub mprotect_len: u32,
    pub mprotect_prot: u32,
    pub pkey_mprotect_start: u32,
    pub pkey_mprotect_len: u32,
    pub pkey_mprotect_prot: u32,
    pub mremap_addr: u32,
    pub mremap_old_len: u32,
    pub mremap_new_len: u32,
    pub mremap_flags: u32,
    /// `exceptions:page_fault_*` (the same record for user and kernel faults).
    pub page_fault_address: u32,
    pub page_fault_error_code: u32,
    /// `sys_enter_brk`'s `brk`.
    pub brk_brk: u32,
    pub msync_start: u32,
    pub msync_len: u32,
    pub msync_flags: u32,
    /// `cgroup:cgroup_mkdir` (read only with `--container`; zero when absent).
    pub cgroup_mkdir_root: u32,
    pub cgroup_mkdir_level: u32,
    pub cgroup_mkdir_id: u32,
    pub cgroup_mkdir_path: u32,
}
const _: () = assert!(core::mem::size_of::<TracepointOffsets>() == 116);

/// Byte offsets of kernel struct members, read by the agent from the kernel's BTF, so
/// the programs can follow an mmap's fd to its file's path on any kernel without CO-RE.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    pub task_tgid: u32,
    pub task_mm: u32,
    pub mm_exe_file: u32,
    pub mm_start_code: u32,
    pub mm_end_code: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdtable_max_fds: u32,
    pub fdtable_fd: u32,
    /// `file.f_path` plus `path.dentry`.
    pub file_dentry: u32,
    /// `file.f_path` plus `path.mnt`.
    pub file_vfsmount: u32,
    pub vfsmount_mnt_root: u32,
    /// Offset of the `vfsmount` inside its `struct mount`.
    pub mount_mnt: u32,
    pub mount_mnt_id: u32,
    pub dentry_parent: u32,
    /// `dentry.d_name` plus `qstr.name`.
    pub dentry_name: u32,
    /// `dentry.d_name` plus `qstr.len`.
    pub dentry_name_len: u32,
    /// `task_struct.signal`, `signal_struct.live` (threads alive) and `.rlim`.
    pub task_signal: u32,
    pub signal_live: u32,
    pub signal_rlim: u32,
    /// `mm_struct` members the exec-time walk and the heap need.
    pub mm_start_data: u32,
    pub mm_end_data: u32,
    pub mm_start_brk: u32,
    pub mm_start_stack: u32,
    pub mm_saved_auxv: u32,
    /// `vm_area_struct` members.
    pub vma_vm_start: u32,
    pub vma_vm_end: u32,
    pub vma_vm_flags: u32,
    pub vma_vm_pgoff: u32,
    pub vma_vm_file: u32,
    /// `file.f_inode`, `inode.i_ino`, `inode.i_sb`, `super_block.s_dev`: a mapped
    /// file's key for its unwind table.
    pub file_inode: u32,
    pub inode_ino: u32,
    pub inode_sb: u32,
    pub sb_dev: u32,
    /// For the older kernels' object: `task_struct.stack` (the user registers sit at
    /// its top), `mm_struct.mmap` and `vm_area_struct.vm_next` (the VMA list, gone in
    /// 6.1); `OFFSET_ABSENT` where the kernel has no such member.
    pub task_stack: u32,
    pub mm_mmap: u32,
    pub vma_vm_next: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 152);

/// A `KernelOffsets` member this kernel does not have.
pub const OFFSET_ABSENT: u32 = u32::MAX;

impl TracepointOffsets {
    /// All zero: the placeholder the agent overwrites at load time.
    pub const fn zeroed() -> Self {
        // SAFETY: integers only.
        unsafe { core::mem::zeroed() }
    }
}

impl AgentConfig {
    /// All zero: the placeholder the agent overwrites at load time.
    pub const fn zeroed() -> Self {
        // SAFETY: integers only.
        unsafe { core::mem::zeroed() }
    }
}

impl KernelOffsets {
    /// All zero: the placeholder the agent overwrites at load time.
    pub const fn zeroed() -> Self {
        // SAFETY: integers only.
        unsafe { core::mem::zeroed() }
    }
}

/// Scope, region filters and behaviour switches. Booleans are u32 (0 or 1).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// `--comm` filters exist (checked on mmap of processes not yet in scope).
    pub match_comm: u32,
    /// Emit aya-log diagnostics from the kernel.
    pub log_enabled: u32,
    /// `--all`: every process joins the scope at its next mmap (except the agent).
    pub scope_all: u32,
    /// The agent's own tgid, never audited (its writes would feed back).
    pub agent_tgid: u32,
    /// `--cgroup` or `--container` given: processes in the trees of `SCOPE_CGROUPS`
    /// join the scope.
    pub match_cgroups: u32,
    /// `--path GLOB` given: new file-backed regions start `PATH_PENDING`, others
    /// `PATH_REJECTED`.
    pub path_filter: u32,
    /// Default (aggregated) mode: faults are counted in the kernel's `FAULT_TALLIES`
    /// and only each aggregate's first fault is sent as a record.
    pub aggregate_in_kernel: u32,
    /// `--unwind`: `UNWIND_AUTO`, `UNWIND_CFI` or `UNWIND_FRAME_POINTER`.
    pub unwind_mode: u32,
    /// `--wx-only`, `--shared-only`, `--anon-only`, `--min-size`: the rule the agent
    /// applies too.
    pub region_filter: RegionFilterRule,
    /// `--rate-limit`: fault records per second per process, 0 for no limit.
    pub rate_limit: u64,
}
const _: () = assert!(core::mem::size_of::<AgentConfig>() == 64);
const _: () = assert!(core::mem::offset_of!(AgentConfig, region_filter) == 32);

/// `--unwind auto`: the unwind tables where the code has them, frame pointers elsewhere.
pub const UNWIND_AUTO: u32 = 0;
/// `--unwind cfi`: the unwind tables only; a frame without them ends the stack.
pub const UNWIND_CFI: u32 = 1;
/// `--unwind frame-pointer`: frame pointers only (the kernel's own walk, cheaper, and
/// wrong in code built without them).
pub const UNWIND_FRAME_POINTER: u32 = 2;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` integers with no padding (sizes asserted above).
    unsafe impl aya::Pod for super::TracepointOffsets {}
    unsafe impl aya::Pod for super::AgentConfig {}
    unsafe impl aya::Pod for super::KernelOffsets {}
}
