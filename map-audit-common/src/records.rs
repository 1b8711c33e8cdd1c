//! Ring-buffer records, one struct per kind, each starting with a [`RecordHeader`].
//! Every record is only as large as its own kind needs.

use crate::{COMM_LEN, MAX_STACK_DEPTH, region::Region};

/// A region was added to the table (successful mmap of a writable mapping).
pub const KIND_REGION_MAPPED: u32 = 1;
/// Part or all of a region left the table (munmap, or a MAP_FIXED mapping over it).
pub const KIND_REGION_UNMAPPED: u32 = 2;
/// An audited write fault.
pub const KIND_WRITE_FAULT: u32 = 3;
/// An in-scope process exited: its regions can be dropped (a `ProcessRecord`).
pub const KIND_PROCESS_EXIT: u32 = 4;
/// An unmapped range the kernel's walk could not settle alone (it skipped gaps where a
/// region may start); the agent removes what its copy of the table has there.
pub const KIND_UNMAP_UNRESOLVED: u32 = 5;
/// The file behind a region about to be reported mapped (sent just before it).
pub const KIND_MAPPED_FILE: u32 = 6;
/// mprotect changed part or all of a region (`detail` = the new prot).
pub const KIND_REGION_PROTECTED: u32 = 7;
/// An mprotect'd range the kernel's walk could not settle alone (`detail` = new prot).
pub const KIND_PROTECT_UNRESOLVED: u32 = 8;
/// An audited write the kernel did for the process (`KernelFaultRecord`).
pub const KIND_KERNEL_WRITE_FAULT: u32 = 11;
/// The program an exec loaded: its text, `[start_code, end_code)` as a `RegionRecord`
/// (the path follows the `KIND_MAPPED_FILE` record sent just before, same id). Lets
/// the agent symbolise a process that exits before it can read /proc.
pub const KIND_EXEC_IMAGE: u32 = 12;
/// An audited process forked a new process (not a thread).
pub const KIND_PROCESS_FORK: u32 = 9;
/// An audited process called exec: its old regions are gone.
pub const KIND_PROCESS_EXEC: u32 = 10;
/// An mremap whose old range the kernel's table did not hold (a `RegionRecord`:
/// `range_*` the old range, `region.start`/`end` the new one, `detail` mremap's
/// flags): the agent moves what its copy holds there.
pub const KIND_REMAP_UNRESOLVED: u32 = 13;
/// A write a hardware watchpoint caught (`map-audit watch`; a `WatchRecord`).
pub const KIND_WATCH_WRITE: u32 = 14;
/// An msync of an in-scope process on a tracked region (a `SyncRecord`).
pub const KIND_REGION_SYNCED: u32 = 15;
/// A write fault on a shared file mapping: the page is dirty until written back (a
/// `DirtyPageRecord`, sent besides the fault's own accounting).
pub const KIND_PAGE_DIRTIED: u32 = 16;
/// A cgroup was made (with `--container`: the agent checks whether it is a scoped
/// container's).
pub const KIND_CGROUP_MADE: u32 = 17;
/// A write fault whose stack walk reached code the agent had not built the unwind
/// table of yet (a program's first writes after its exec): a `SnapshotFaultRecord`,
/// the agent finishes the walk from the copy of the stack.
pub const KIND_WRITE_FAULT_SNAPSHOT: u32 = 18;

/// `RegionRecord::detail` of a region mapped by mmap.
pub const ORIGIN_MMAP: u32 = 0;
/// `RegionRecord::detail` of a region moved or resized by mremap.
pub const ORIGIN_MREMAP: u32 = 1;
/// `RegionRecord::detail` of the brk heap, made or grown by brk (same id as it grows).
pub const ORIGIN_BRK: u32 = 2;
/// `RegionRecord::detail` of a mapping the kernel made at exec (the program's and its
/// interpreter's segments, the stack), read before the program's first instruction.
pub const ORIGIN_EXEC: u32 = 3;

/// Path components captured per mapped file, leaf first; deeper paths are marked
/// truncated.
pub const MAX_PATH_COMPONENTS: usize = 16;
/// Bytes per captured path component, NUL included (longer names are cut).
pub const PATH_COMPONENT_LEN: usize = 64;

/// Common prefix of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RecordHeader {
    /// One of the `KIND_*` constants.
    pub kind: u32,
    pub tgid: u32,
    pub tid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns` (CLOCK_MONOTONIC).
    pub ts_ns: u64,
    /// `bpf_get_current_cgroup_id`: the thread's cgroup v2 id (its directory's inode in
    /// cgroupfs) when the record was made, so a process gone by the time the agent
    /// reads the record still says which container it ran in.
    pub cgroup_id: u64,
    pub comm: [u8; COMM_LEN],
}
const _: () = assert!(core::mem::size_of::<RecordHeader>() == 48);

/// `FaultRecord::error_code` when the hook does not know it (the perf event): such a
/// fault may be a read of a writable page.
pub const ERROR_CODE_UNKNOWN: u64 = u64::MAX;

/// `KIND_REGION_MAPPED`, `_UNMAPPED`, `_PROTECTED`, and the `_UNRESOLVED` kinds (whose
/// `region` is zero).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RegionRecord {
    pub header: RecordHeader,
    /// The region as it was in the table (for an unmap or mprotect: before it).
    pub region: Region,
    /// The part of the region this record is about (all of it for a map).
    pub range_start: u64,
    pub range_end: u64,
    /// The new prot for `_PROTECTED` and `PROTECT_UNRESOLVED`; for `_MAPPED` one of the
    /// `ORIGIN_*` values; mremap's flags for `REMAP_UNRESOLVED`; 0 otherwise.
    pub detail: u32,
    pub _pad: u32,
    /// For the `_UNRESOLVED` kinds: the system call's `PendingCall::seq`, so the agent
    /// leaves alone regions made after the call began. 0 otherwise.
    pub seq: u64,
}
const _: () = assert!(core::mem::size_of::<RegionRecord>() == 144);

/// `KIND_PROCESS_FORK` (the header is the parent's), `_EXEC` and `_EXIT`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessRecord {
    pub header: RecordHeader,
    /// Fork: the child's tgid. Exec: the process's own tgid.
    pub tgid: u32,
    /// The new generation (the child's, or the process's after exec).
    pub generation: u32,
}
const _: () = assert!(core::mem::size_of::<ProcessRecord>() == 56);

/// `KIND_WRITE_FAULT`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct FaultRecord {
    pub header: RecordHeader,
    /// The faulting user address.
    pub address: u64,
    /// The architecture's fault error code (x86: 0x2 write, 0x4 user, 0x1 present), or
    /// `ERROR_CODE_UNKNOWN` (the perf-event hook cannot see it).
    pub error_code: u64,
    pub region: Region,
    /// Non-zero when this fault opened a kernel tally, or is the first fault of a flush
    /// interval on one (`tally::TallyKey::stack_hash`).
    pub stack_hash: u64,
    /// Bytes of `stack` filled, or a negative errno.
    pub stack_bytes: i64,
    /// `FAULT_*` bits.
    pub flags: u32,
    /// The flush interval (`TALLY_EPOCH`, low 32 bits) the fault happened in.
    pub epoch: u32,
    /// Why the stack walk stopped (`unwind::STACK_END_*`).
    pub stack_end: u32,
    pub _pad: u32,
    /// User return addresses, innermost first.
    pub stack: [u64; MAX_STACK_DEPTH],
}
const _: () = assert!(core::mem::size_of::<FaultRecord>() == 160 + 8 * MAX_STACK_DEPTH);
const _: () = assert!(core::mem::offset_of!(FaultRecord, stack) == FaultRecord::FIXED_BYTES);

/// `FaultRecord::flags`: the region is the parent's (a just-forked child the agent had
/// not copied the regions of yet); the agent reports it as the child's copy.
pub const FAULT_VIA_PARENT: u32 = 1;
/// `FaultRecord::flags`: the stack walk stopped before the stack's end (depth limit).
pub const FAULT_STACK_TRUNCATED: u32 = 2;

impl FaultRecord {
    /// Bytes before `stack`.
    pub const FIXED_BYTES: usize = 160;

    /// Bytes a `KIND_WRITE_FAULT` record takes in the ring buffer: the frames the stack
    /// has, not all `MAX_STACK_DEPTH` (a full record is ~7x the usual one).
    pub fn wire_len(stack_bytes: i64) -> usize {
        Self::FIXED_BYTES + frame_bytes(stack_bytes)
    }
}

/// Bytes of user stack a `SnapshotFaultRecord` copies, from the frame where the
/// kernel's walk stopped (as perf's `--call-graph dwarf` copies from the fault: a
/// 4 KiB copy left loader and stdio stacks unfinished).
pub const SNAPSHOT_BYTES: usize = 8192;

/// `KIND_WRITE_FAULT_SNAPSHOT`: a fault record with all its frames so far, the
/// registers of the frame the walk stopped at, and the stack above that frame.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SnapshotFaultRecord {
    pub fault: FaultRecord,
    /// The frame to go on from: its pc, stack and frame pointers.
    pub pc: u64,
    pub sp: u64,
    pub bp: u64,
    /// Non-zero: `pc` is the instruction that ran, not a return address.
    pub exact: u32,
    /// Bytes of `stack` copied from `sp` up (0: unreadable).
    pub stack_len: u32,
    pub stack: [u8; SNAPSHOT_BYTES],
}
const _: () = assert!(
    core::mem::size_of::<SnapshotFaultRecord>()
        == core::mem::size_of::<FaultRecord>() + 32 + SNAPSHOT_BYTES
);

/// `KIND_WATCH_WRITE`: one write to a watched address, after it happened.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct WatchRecord {
    pub header: RecordHeader,
    /// The watched address (the breakpoint's, as the perf sample gives it).
    pub address: u64,
    /// The 8 bytes at `address` read after the write (the agent keeps the watch's
    /// length of them); 0 when unreadable (`flags`).
    pub value: u64,
    /// Bytes of `stack` filled, or a negative errno.
    pub stack_bytes: i64,
    /// Why the stack walk stopped (`unwind::STACK_END_*`).
    pub stack_end: u32,
    /// `WATCH_VALUE_UNREAD` when the value could not be read.
    pub flags: u32,
    /// The writer's user stack: the instruction after the write, then return addresses.
    pub stack: [u64; MAX_STACK_DEPTH],
}
const _: () = assert!(core::mem::offset_of!(WatchRecord, stack) == WatchRecord::FIXED_BYTES);
const _: () = assert!(core::mem::size_of::<WatchRecord>() == 80 + 8 * MAX_STACK_DEPTH);

/// `WatchRecord::flags`: the value could not be read after the write.
pub const WATCH_VALUE_UNREAD: u32 = 1;

impl WatchRecord {
    /// Bytes before `stack`.
    pub const FIXED_BYTES: usize = 80;

    /// Bytes a record takes in the ring buffer: the frames its stack has.
    pub fn wire_len(stack_bytes: i64) -> usize {
        Self::FIXED_BYTES + frame_bytes(stack_bytes)
    }
}

/// `KIND_REGION_SYNCED`: one msync call, at its return.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SyncRecord {
    pub header: RecordHeader,
    /// The range asked for (`start`, `len`) and msync's `MS_*` flags.
    pub start: u64,
    pub len: u64,
    pub flags: u32,
    /// Why the stack walk stopped (`unwind::STACK_END_*`).
    pub stack_end: u32,
    /// 0, or -errno.
    pub ret: i64,
    /// From entry to return.
    pub duration_ns: u64,
    /// The tracked region holding `start` (page-aligned down).
    pub region: Region,
    /// Bytes of `stack` filled, or a negative errno.
    pub stack_bytes: i64,
    /// The caller's user stack, innermost first (the instruction after the syscall).
    pub stack: [u64; MAX_STACK_DEPTH],
}
const _: () = assert!(core::mem::offset_of!(SyncRecord, stack) == SyncRecord::FIXED_BYTES);
const _: () = assert!(core::mem::size_of::<SyncRecord>() == 160 + 8 * MAX_STACK_DEPTH);

impl SyncRecord {
    /// Bytes before `stack`.
    pub const FIXED_BYTES: usize = 160;

    /// Bytes a record takes in the ring buffer: the frames its stack has.
    pub fn wire_len(stack_bytes: i64) -> usize {
        Self::FIXED_BYTES + frame_bytes(stack_bytes)
    }
}

/// `MS_*` flags of msync.
pub const MS_ASYNC: u32 = 1;
pub const MS_INVALIDATE: u32 = 2;
pub const MS_SYNC: u32 = 4;

/// `KIND_PAGE_DIRTIED`: a page of a shared file mapping took a write fault.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct DirtyPageRecord {
    pub header: RecordHeader,
    pub region_id: u64,
    /// The page's index in the file (`file_offset / PAGE_SIZE`): stable when the region
    /// is split or moved.
    pub file_page: u64,
    /// The faulting address.
    pub address: u64,
}
const _: () = assert!(core::mem::size_of::<DirtyPageRecord>() == 72);

/// The bytes of a record's `stack` a walk's `stack_bytes` fills.
fn frame_bytes(stack_bytes: i64) -> usize {
    stack_bytes.clamp(0, 8 * MAX_STACK_DEPTH as i64) as usize & !7
}

/// Kernel frames captured for a write the kernel did (read(), recv(), copy_to_user).
pub const MAX_KERNEL_STACK_DEPTH: usize = 32;

/// `KIND_KERNEL_WRITE_FAULT`: a fault record plus the kernel stack.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelFaultRecord {
    /// `fault.header.kind` is `KIND_KERNEL_WRITE_FAULT`; `fault.stack` is the user
    /// stack at the system call.
    pub fault: FaultRecord,
    /// Bytes of `kernel_stack` filled, or a negative errno.
    pub kernel_stack_bytes: i64,
    pub kernel_stack: [u64; MAX_KERNEL_STACK_DEPTH],
}
const _: () = assert!(
    core::mem::size_of::<KernelFaultRecord>()
        == core::mem::size_of::<FaultRecord>() + 8 + 8 * MAX_KERNEL_STACK_DEPTH
);

/// `KIND_MAPPED_FILE`: the path of a mapped file as dentry names up to its mount's
/// root, and the mount's id (the agent turns it into the mount point).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct MappedFileRecord {
    pub header: RecordHeader,
    pub region_id: u64,
    /// `struct mount.mnt_id`, as in /proc/PID/mountinfo.
    pub mount_id: u32,
    /// Components filled in `names`.
    pub depth: u32,
    /// Non-zero when the walk stopped before the mount root (path too deep).
    pub truncated: u32,
    /// Bit `i` set: `names[i]` was longer than `PATH_COMPONENT_LEN - 1` bytes and is cut.
    pub cut_names: u32,
    /// NUL-terminated names, leaf first.
    pub names: [[u8; PATH_COMPONENT_LEN]; MAX_PATH_COMPONENTS],
}
const _: () = assert!(
    core::mem::size_of::<MappedFileRecord>() == 72 + PATH_COMPONENT_LEN * MAX_PATH_COMPONENTS
);

/// Bytes of a made cgroup's path kept (longer paths are cut; the container id is near
/// the end, so a cut path is not matched).
pub const CGROUP_PATH_LEN: usize = 256;

/// `KIND_CGROUP_MADE`: `cgroup:cgroup_mkdir`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct CgroupRecord {
    pub header: RecordHeader,
    /// Its cgroup id (its directory's inode).
    pub id: u64,
    /// Depth below its hierarchy's root.
    pub level: u32,
    /// The hierarchy (0: cgroup v2).
    pub hierarchy: u32,
    /// NUL-terminated path below the hierarchy's root.
    pub path: [u8; CGROUP_PATH_LEN],
}
const _: () = assert!(core::mem::size_of::<CgroupRecord>() == 64 + CGROUP_PATH_LEN);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` integers with no padding (sizes asserted above).
    unsafe impl aya::Pod for super::RecordHeader {}
    unsafe impl aya::Pod for super::RegionRecord {}
    unsafe impl aya::Pod for super::FaultRecord {}
    unsafe impl aya::Pod for super::MappedFileRecord {}
    unsafe impl aya::Pod for super::ProcessRecord {}
    unsafe impl aya::Pod for super::KernelFaultRecord {}
    unsafe impl aya::Pod for super::WatchRecord {}
    unsafe impl aya::Pod for super::SyncRecord {}
    unsafe impl aya::Pod for super::DirtyPageRecord {}
    unsafe impl aya::Pod for super::CgroupRecord {}
    unsafe impl aya::Pod for super::SnapshotFaultRecord {}
}
