//! The region table: keys and values of the kernel's LPM trie of writable regions.

/// Data part of a region-table key: the tgid, the process's scope generation, then the
/// address, all big-endian, because an LPM trie matches prefixes of the key's bytes in
/// memory order. With the generation in the key, entries an exec'd or exited process
/// left behind can never shadow (or be deleted in place of) the current ones.
pub type RegionKeyData = [u8; 16];

/// Bits of the key taken by the tgid and the generation; an address block of size
/// `2^order` then adds `64 - order` bits of prefix.
pub const OWNER_PREFIX_BITS: u32 = 64;

/// Builds the key data for `(tgid, generation, address)`.
#[inline(always)]
pub fn region_key_data(tgid: u32, generation: u32, address: u64) -> RegionKeyData {
    let t = tgid.to_be_bytes();
    let g = generation.to_be_bytes();
    let a = address.to_be_bytes();
    [
        t[0], t[1], t[2], t[3], g[0], g[1], g[2], g[3], a[0], a[1], a[2], a[3], a[4], a[5], a[6],
        a[7],
    ]
}

/// The tgid and generation of a key's data.
pub fn key_owner(data: &RegionKeyData) -> (u32, u32) {
    (
        u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
        u32::from_be_bytes([data[4], data[5], data[6], data[7]]),
    )
}

/// Prefix length of the trie entry for an aligned block of `2^order` bytes.
#[inline(always)]
pub fn block_prefix_len(order: u32) -> u32 {
    OWNER_PREFIX_BITS + 64 - order
}

/// Prefix length that matches one exact address (a lookup key).
pub const LOOKUP_PREFIX_LEN: u32 = OWNER_PREFIX_BITS + 64;

/// A writable region of one process, stored as the value of every trie entry that
/// covers it, so that one lookup returns everything the fault path needs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Region {
    /// First byte of the region.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// Offset into the mapped file, in bytes (0 for anonymous memory).
    pub file_offset: u64,
    /// Unique for the agent's lifetime; pieces left by a partial unmap keep it. The
    /// kernel's ids come from one increasing sequence (`ID_SEQUENCE`), so an id above a
    /// system call's `PendingCall::seq` belongs to a region made after that call began;
    /// the agent's own ids start at `AGENT_REGION_IDS`.
    pub id: u64,
    /// `PROT_*` bits (from mmap, or the last mprotect).
    pub prot: u32,
    /// `MAP_*` flags given to mmap.
    pub flags: u32,
    /// The owning process's scope generation when the region was made: entries left by
    /// an exec'd or exited process (until the agent removes them) never match.
    pub generation: u32,
    /// `--path` filter state: `PATH_MATCHED` (or no filter), `PATH_PENDING`,
    /// `PATH_REJECTED`.
    pub path_filter: u32,
    /// The mapped file (0, 0 for anonymous memory): its unwind table is keyed by it.
    pub file: FileKey,
}
const _: () = assert!(core::mem::size_of::<Region>() == 64);

/// A file as the kernel names it: its superblock's device (`s_dev`, the kernel's own
/// `MKDEV(major, minor)` = `major << 20 | minor`) and inode number.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct FileKey {
    pub dev: u32,
    pub _pad: u32,
    pub inode: u64,
}
const _: () = assert!(core::mem::size_of::<FileKey>() == 16);

impl FileKey {
    /// The key of a file with device `major:minor` (as /proc/PID/maps and `stat` give
    /// it) and inode `inode`.
    pub fn new(major: u32, minor: u32, inode: u64) -> Self {
        Self {
            dev: (major << 20) | minor,
            _pad: 0,
            inode,
        }
    }
}

/// No `--path` filter, or the path matched: audited.
pub const PATH_MATCHED: u32 = 0;
/// A file-backed region the agent has not judged yet: its faults go to the agent, which
/// applies the glob.
pub const PATH_PENDING: u32 = 1;
/// The path does not match (or the region has none): not audited.
pub const PATH_REJECTED: u32 = 2;

/// Ids the agent gives regions it creates itself (from /proc, fork copies), above any
/// the kernel hands out and below 2^53 (JSON numbers stay exact).
pub const AGENT_REGION_IDS: u64 = 1 << 52;

/// Whether a range change made by a system call that began when the id sequence stood
/// at `call_seq` applies to `region`: not to regions made after the call began (another
/// thread's mmap that reused the range once this call had freed it). The agent's
/// regions stand for mappings older than any call it has not seen yet.
#[inline(always)]
pub fn change_applies(region: &Region, call_seq: u64) -> bool {
    region.id <= call_seq || region.id >= AGENT_REGION_IDS
}

/// A process in scope: the value of the scope map, keyed by tgid. Written only by the
/// kernel once the process runs (the agent inserts entries with `BPF_NOEXIST` only), so
/// no read-modify-write of the agent's can undo an exec or resurrect an exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ScopeEntry {
    /// Changes when the process enters the scope and at each exec.
    pub generation: u32,
    /// `SCOPE_FORKED`: a fork's child whose faults may fall back to its parent's
    /// regions (`ForkFallback`) until the agent has copied them.
    pub flags: u32,
    /// Changes the kernel made to this process's regions (atomic adds): a parent whose
    /// count moved since a fork has changed its table since.
    pub edits: u64,
    /// Non-zero while one of the process's system-call exits edits its regions: two
    /// threads' edits of one range must not interleave (a check-then-delete of one
    /// would remove the other's new block).
    pub edit_lock: u64,
}
const _: () = assert!(core::mem::size_of::<ScopeEntry>() == 24);

/// `ScopeEntry::flags`: the process is a fork's child (see `ForkFallback`).
pub const SCOPE_FORKED: u32 = 1;

/// A forked child's way to its parent's regions, until the agent has copied them into
/// the child's own (then the agent deletes this entry; the kernel does at exec and exit).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ForkFallback {
    pub parent_tgid: u32,
    /// The parent's generation at the fork.
    pub parent_generation: u32,
    /// The child's generation this entry is for.
    pub child_generation: u32,
    pub _pad: u32,
    /// The id sequence at the fork: the parent's regions with higher ids are newer than
    /// the child.
    pub fork_seq: u64,
    /// The parent's `ScopeEntry::edits` at the fork.
    pub parent_edits: u64,
}
const _: () = assert!(core::mem::size_of::<ForkFallback>() == 32);

/// Arguments of an in-flight mmap, munmap, mprotect or mremap, saved at syscall entry by
/// thread id and consumed at exit (a thread is in one syscall at a time, so one table
/// serves all of them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct PendingCall {
    pub addr: u64,
    /// Length (mremap: the old length).
    pub len: u64,
    /// mmap's file offset.
    pub file_offset: u64,
    /// mremap's new length.
    pub new_len: u64,
    pub prot: u32,
    /// mmap's or mremap's flags.
    pub flags: u32,
    /// mmap's fd (for the file's path).
    pub fd: i32,
    pub _pad: u32,
    /// The region id sequence when the call entered (see `change_applies`).
    pub seq: u64,
    /// `bpf_ktime_get_ns` when the call entered (msync: its duration).
    pub entered_ns: u64,
}
const _: () = assert!(core::mem::size_of::<PendingCall>() == 64);

/// A process's `--rate-limit` token bucket, in nano-tokens (1e9 per fault record).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct RateBucket {
    pub nano_tokens: u64,
    pub last_ns: u64,
}

/// `PROT_READ` (the same value on every Linux architecture).
pub const PROT_READ: u32 = 0x1;
/// `PROT_WRITE`.
pub const PROT_WRITE: u32 = 0x2;
/// `PROT_EXEC`.
pub const PROT_EXEC: u32 = 0x4;
/// `MREMAP_FIXED`.
pub const MREMAP_FIXED: u32 = 0x2;
/// `MREMAP_DONTUNMAP`: the old range stays mapped (emptied).
pub const MREMAP_DONTUNMAP: u32 = 0x4;

impl Region {
    /// Writable: only these regions are audited and reported.
    pub fn is_writable(&self) -> bool {
        self.prot & PROT_WRITE != 0
    }

    /// Writable and executable at once (JIT, shellcode).
    pub fn is_wx(&self) -> bool {
        self.prot & (PROT_WRITE | PROT_EXEC) == PROT_WRITE | PROT_EXEC
    }

    /// Mapped `MAP_SHARED` (or `MAP_SHARED_VALIDATE`).
    pub fn is_shared(&self) -> bool {
        matches!(
            self.flags & MAP_SHARED_VALIDATE,
            MAP_SHARED | MAP_SHARED_VALIDATE
        )
    }

    pub fn is_anonymous(&self) -> bool {
        self.flags & MAP_ANONYMOUS != 0
    }

    /// A shared mapping of a file: its written pages go back to the file (msync, or
    /// the kernel's writeback).
    pub fn is_shared_file(&self) -> bool {
        self.is_shared() && !self.is_anonymous()
    }
}
/// `MAP_SHARED`.
pub const MAP_SHARED: u32 = 0x01;
/// `MAP_PRIVATE`.
pub const MAP_PRIVATE: u32 = 0x02;
/// `MAP_SHARED_VALIDATE`: `MAP_SHARED` that rejects unknown flags (both bits set).
pub const MAP_SHARED_VALIDATE: u32 = 0x03;
/// `MAP_FIXED`.
pub const MAP_FIXED: u32 = 0x10;
/// `MAP_ANONYMOUS` (x86, arm64, riscv; differs on mips/parisc/alpha).
pub const MAP_ANONYMOUS: u32 = 0x20;
/// `MAP_GROWSDOWN` (x86, arm64, riscv).
pub const MAP_GROWSDOWN: u32 = 0x100;
/// `MAP_STACK` (x86, arm64, riscv).
pub const MAP_STACK: u32 = 0x20000;
/// `MAP_HUGETLB` (x86, arm64, riscv).
pub const MAP_HUGETLB: u32 = 0x40000;
/// `MAP_HUGE_SHIFT`: bits 26..31 of mmap's flags give log2 of the huge page size.
pub const MAP_HUGE_SHIFT: u32 = 26;
/// Not an mmap flag: the region is the process's brk heap (a bit no Linux `MAP_*` flag
/// uses, below the huge page size bits).
pub const REGION_HEAP: u32 = 0x0200_0000;

/// Bytes an mmap of `len` bytes with `flags` takes: whole pages, or whole huge pages
/// for `MAP_HUGETLB` (size from the flags, else 2 MiB: x86's default huge page).
#[inline(always)]
pub fn mapped_length(len: u64, flags: u32) -> u64 {
    let unit = if flags & MAP_HUGETLB != 0 {
        match flags >> MAP_HUGE_SHIFT {
            0 => 2 << 20,
            shift => 1u64 << (shift & 63),
        }
    } else {
        crate::PAGE_SIZE
    };
    len.div_ceil(unit) * unit
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` integers with no padding (sizes asserted above).
    unsafe impl aya::Pod for super::Region {}
    unsafe impl aya::Pod for super::FileKey {}
    unsafe impl aya::Pod for super::PendingCall {}
    unsafe impl aya::Pod for super::ScopeEntry {}
    unsafe impl aya::Pod for super::ForkFallback {}
}

/// Slots of the table-version map: each counts the edits of the region table and the
/// scope map made by one writer, bumped after the edits (see the fault path's cache).
pub const TABLE_VERSION_KERNEL: u32 = 0;
pub const TABLE_VERSION_AGENT: u32 = 1;
pub const TABLE_VERSION_SLOTS: u32 = 2;
