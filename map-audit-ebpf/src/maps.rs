//! Every BPF map and read-only global of the programs, in one place. Sizes here are
//! defaults; the agent resizes them at load time (`EbpfLoader::map_max_entries`).

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use map_audit_common::{
    COMM_LEN,
    config::{AgentConfig, KernelOffsets, TracepointOffsets},
    counters::COUNTER_COUNT,
    region::{PendingCall, Region, RegionKeyData},
};

/// Writable regions of in-scope processes, one entry per aligned block of a region.
#[map]
pub static REGIONS: LpmTrie<RegionKeyData, Region> = LpmTrie::with_max_entries(262_144, 0);

/// tgids whose faults are audited (value unused). The fault path's first check.
#[map]
pub static SCOPE: HashMap<u32, u32> = HashMap::with_max_entries(16_384, 0);

/// `--comm` names; a process whose comm matches joins `SCOPE` at its next mmap.
#[map]
pub static SCOPE_COMMS: HashMap<[u8; COMM_LEN], u32> = HashMap::with_max_entries(64, 0);

/// mmap/munmap arguments between syscall entry and exit, by thread id.
#[map]
pub static PENDING_CALLS: HashMap<u32, PendingCall> = HashMap::with_max_entries(16_384, 0);

/// Records to the agent. Power-of-two size in bytes.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Produced and lost counts, per CPU so the hot path never contends.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// Per-CPU sequence for region ids.
#[map]
pub static REGION_SEQ: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Tracepoint field offsets, read by the agent from tracefs `format` files.
#[unsafe(no_mangle)]
static TRACEPOINT_OFFSETS: TracepointOffsets = TracepointOffsets {
    mmap_addr: 0,
    mmap_len: 0,
    mmap_prot: 0,
    mmap_flags: 0,
    mmap_off: 0,
    munmap_addr: 0,
    munmap_len: 0,
    exit_ret: 0,
    fork_child_pid: 0,
    mmap_fd: 0,
};

/// Kernel struct member offsets, read by the agent from the kernel's BTF.
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets {
    task_files: 0,
    files_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_dentry: 0,
    file_vfsmount: 0,
    vfsmount_mnt_root: 0,
    mount_mnt: 0,
    mount_mnt_id: 0,
    dentry_parent: 0,
    dentry_name: 0,
    _pad: 0,
};

#[unsafe(no_mangle)]
static AGENT_CONFIG: AgentConfig = AgentConfig {
    match_comm: 0,
    log_enabled: 0,
};

/// The offsets as set by the agent (volatile: the loader rewrites the value).
#[inline(always)]
pub fn tracepoint_offsets() -> TracepointOffsets {
    unsafe { core::ptr::read_volatile(&TRACEPOINT_OFFSETS) }
}

#[inline(always)]
pub fn agent_config() -> AgentConfig {
    unsafe { core::ptr::read_volatile(&AGENT_CONFIG) }
}

#[inline(always)]
pub fn kernel_offsets() -> KernelOffsets {
    unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) }
}
