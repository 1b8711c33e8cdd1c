//! Every BPF map and read-only global of the programs, in one place. Sizes here are
//! defaults; the agent resizes them at load time (`EbpfLoader::map_max_entries`).
//! A hash `remove` whose result the programs ignore can only fail because the entry
//! is gone already (another CPU or the agent removed it).

use crate::{
    exec_mappings::ExecWalk,
    region_cache::RegionCache,
    region_table::{RangeWalk, TableEdit},
    stack_memo::{MEMO_SLOTS, StackMemo},
    tick_clock::TickClock,
    user_stack::{CachedRow, FrameWalk, UNWIND_CACHE_SLOTS},
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf},
};
use map_audit_common::{
    COMM_LEN,
    config::{AgentConfig, KernelOffsets, TracepointOffsets},
    counters::COUNTER_COUNT,
    records::{FaultRecord, SyncRecord, WatchRecord},
    region::{
        FileKey, ForkFallback, PendingCall, RateBucket, Region, RegionKeyData, ScopeEntry,
        TABLE_VERSION_SLOTS,
    },
    tally::{Tally, TallyKey},
    unwind::{UnwindRow, UnwindTable},
};

/// Mappings of in-scope processes (writable or not: an mprotect can make any of them
/// writable), one entry per aligned block of a region, keyed by (tgid, generation,
/// address).
#[map]
pub static REGIONS: LpmTrie<RegionKeyData, Region> = LpmTrie::with_max_entries(262_144, 0);

/// Processes whose faults are audited, by tgid. The fault path's first check.
#[map]
pub static SCOPE: HashMap<u32, ScopeEntry> = HashMap::with_max_entries(16_384, 0);

/// Forked children whose faults may fall back to their parent's regions until the
/// agent has copied them (it then deletes the entry), by the child's tgid.
#[map]
pub static FORK_FALLBACKS: HashMap<u32, ForkFallback> = HashMap::with_max_entries(16_384, 0);

/// The agent's `--path` verdicts (`PATH_MATCHED` or `PATH_REJECTED`) by region id, for
/// regions made `PATH_PENDING`. The agent never rewrites the kernel's region entries.
#[map]
pub static PATH_VERDICTS: HashMap<u64, u32> = HashMap::with_max_entries(262_144, 0);

/// The exec-time walk of a new program's mappings, per CPU (`exec_mappings`).
#[map]
pub static EXEC_WALK: PerCpuArray<ExecWalk> = PerCpuArray::with_max_entries(1, 0);

/// Edits of `REGIONS` and `SCOPE` so far, one slot per writer
/// (`map_audit_common::region::TABLE_VERSION_*`): the fault path's memo is valid while
/// they are unchanged.
#[map]
pub static TABLE_VERSIONS: Array<u64> = Array::with_max_entries(TABLE_VERSION_SLOTS, 0);

/// The region-table edit in progress on each CPU (`region_table::TableEdit`).
#[map]
pub static TABLE_EDIT: PerCpuArray<TableEdit> = PerCpuArray::with_max_entries(1, 0);

/// The unmap or mprotect walk in progress on each CPU (`region_table::RangeWalk`).
#[map]
pub static RANGE_WALK: PerCpuArray<RangeWalk> = PerCpuArray::with_max_entries(1, 0);

/// The fault path's last scope and region lookups, per CPU (`region_cache`).
#[map]
pub static REGION_CACHE: PerCpuArray<RegionCache> = PerCpuArray::with_max_entries(1, 0);

/// `--cgroup` and `--container` cgroup ids; a process in one of their trees joins
/// `SCOPE` at its next exec or mmap.
#[map]
pub static SCOPE_CGROUPS: HashMap<u64, u32> = HashMap::with_max_entries(4096, 0);

/// Bit `l` set: some `SCOPE_CGROUPS` entry is at level `l` (the levels to check).
#[map]
pub static SCOPE_CGROUP_LEVELS: Array<u32> = Array::with_max_entries(1, 0);

/// `--comm` names; a process whose comm matches joins `SCOPE` at its next mmap.
#[map]
pub static SCOPE_COMMS: HashMap<[u8; COMM_LEN], u32> = HashMap::with_max_entries(64, 0);

/// Syscall arguments between entry and exit, by thread id.
#[map]
pub static PENDING_CALLS: HashMap<u32, PendingCall> = HashMap::with_max_entries(16_384, 0);

/// `--rate-limit` buckets by tgid (LRU: bounded, and emptied at exit).
#[map]
pub static RATE_BUCKETS: LruHashMap<u32, RateBucket> = LruHashMap::with_max_entries(16_384, 0);

/// Records to the agent. Power-of-two size in bytes.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 * 1024 * 1024, 0);

/// Kernel-side fault aggregates of the default mode (`map_audit_common::tally`).
#[map]
pub static FAULT_TALLIES: HashMap<TallyKey, Tally> = HashMap::with_max_entries(65_536, 0);

/// Each CPU's last clock reading for the fault path's tallies (`tick_clock`).
#[map]
pub static TICK_CLOCK: PerCpuArray<TickClock> = PerCpuArray::with_max_entries(1, 0);

/// The agent's flush interval number (written by the agent).
#[map]
pub static TALLY_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

/// Where a user fault record is built before only its used bytes are copied to
/// `EVENTS` (a reservation must have a fixed size). Per CPU: a fault program cannot
/// nest with itself on one CPU.
#[map]
pub static FAULT_SCRATCH: PerCpuArray<FaultRecord> = PerCpuArray::with_max_entries(1, 0);

/// `FAULT_SCRATCH` for a watchpoint's record (`watch_write`).
#[map]
pub static WATCH_SCRATCH: PerCpuArray<WatchRecord> = PerCpuArray::with_max_entries(1, 0);

/// `FAULT_SCRATCH` for an msync's record (`sys_msync`).
#[map]
pub static SYNC_SCRATCH: PerCpuArray<SyncRecord> = PerCpuArray::with_max_entries(1, 0);

/// Every executable file's unwind rows (`map_audit_common::unwind`), sorted within each
/// file; the agent writes them through a memory mapping of the map (BPF_F_MMAPABLE).
#[map]
pub static UNWIND_ROWS: Array<UnwindRow> = Array::with_max_entries(1 << 21, 1 << 10);

/// Where each file's rows are in `UNWIND_ROWS`, by the file's (device, inode).
#[map]
pub static FILE_TABLES: HashMap<FileKey, UnwindTable> = HashMap::with_max_entries(4096, 0);

/// The stack walk in progress on each CPU (`user_stack::FrameWalk`).
#[map]
pub static FRAME_WALK: PerCpuArray<FrameWalk> = PerCpuArray::with_max_entries(1, 0);

/// Rows found for recent pcs, per CPU (`user_stack::CachedRow`).
#[map]
pub static UNWIND_CACHE: PerCpuArray<CachedRow> =
    PerCpuArray::with_max_entries(UNWIND_CACHE_SLOTS, 0);

/// Words of `STACK_WINDOW`: a walk copies 1 KiB at a time, a memo check up to all.
pub const WINDOW_WORDS: usize = 512;

/// The stack walk's copy of the user stack (and the memo check's). Per CPU: a fault
/// program cannot nest with itself on one CPU.
#[map]
pub static STACK_WINDOW: PerCpuArray<[u64; WINDOW_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// Recent fault walks, per CPU (`stack_memo`).
#[map]
pub static STACK_MEMOS: PerCpuArray<StackMemo> = PerCpuArray::with_max_entries(MEMO_SLOTS, 0);

/// Produced and lost counts, per CPU so the hot path never contends.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_COUNT, 0);

/// The last id handed out for regions and scope generations (one global sequence).
#[map]
pub static ID_SEQUENCE: Array<u64> = Array::with_max_entries(1, 0);

/// The most bytes seen waiting in `EVENTS` (the agent reads and resets it for its
/// metrics; a racy max is fine for a high-water mark).
#[map]
pub static RINGBUF_HIGH_WATER: Array<u64> = Array::with_max_entries(1, 0);

/// Tracepoint field offsets, read by the agent from tracefs `format` files.
#[unsafe(no_mangle)]
static TRACEPOINT_OFFSETS: TracepointOffsets = TracepointOffsets::zeroed();

/// Kernel struct member offsets, read by the agent from the kernel's BTF.
#[unsafe(no_mangle)]
static KERNEL_OFFSETS: KernelOffsets = KernelOffsets::zeroed();

#[unsafe(no_mangle)]
static AGENT_CONFIG: AgentConfig = AgentConfig::zeroed();

/// The offsets as set by the agent (volatile: the loader rewrites the value).
#[inline(always)]
pub fn tracepoint_offsets() -> TracepointOffsets {
    unsafe { core::ptr::read_volatile(&TRACEPOINT_OFFSETS) }
}

#[inline(always)]
pub fn kernel_offsets() -> KernelOffsets {
    unsafe { core::ptr::read_volatile(&KERNEL_OFFSETS) }
}

#[inline(always)]
pub fn agent_config() -> AgentConfig {
    unsafe { core::ptr::read_volatile(&AGENT_CONFIG) }
}
