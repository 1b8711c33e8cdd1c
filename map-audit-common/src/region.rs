//! The region table: keys and values of the kernel's LPM trie of writable regions.

/// Data part of a region-table key: the tgid then the address, both big-endian, because
/// an LPM trie matches prefixes of the key's bytes in memory order.
pub type RegionKeyData = [u8; 12];

/// Bits of the key taken by the tgid; an address block of size `2^order` then adds
/// `64 - order` bits of prefix.
pub const TGID_PREFIX_BITS: u32 = 32;

/// Builds the key data for `(tgid, address)`.
#[inline(always)]
pub fn region_key_data(tgid: u32, address: u64) -> RegionKeyData {
    let t = tgid.to_be_bytes();
    let a = address.to_be_bytes();
    [
        t[0], t[1], t[2], t[3], a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7],
    ]
}

/// Prefix length of the trie entry for an aligned block of `2^order` bytes.
#[inline(always)]
pub fn block_prefix_len(order: u32) -> u32 {
    TGID_PREFIX_BITS + 64 - order
}

/// Prefix length that matches one exact address (a lookup key).
pub const LOOKUP_PREFIX_LEN: u32 = TGID_PREFIX_BITS + 64;

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
    /// Unique for the agent's lifetime; pieces left by a partial unmap keep it.
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
}
const _: () = assert!(core::mem::size_of::<Region>() == 48);

/// No `--path` filter, or the path matched: audited.
pub const PATH_MATCHED: u32 = 0;
/// A file-backed region the agent has not judged yet: its faults go to the agent, which
/// applies the glob.
pub const PATH_PENDING: u32 = 1;
/// The path does not match (or the region has none): not audited.
pub const PATH_REJECTED: u32 = 2;

/// A process in scope: the value of the scope map, keyed by tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ScopeEntry {
    /// Changes when the process enters the scope and at each exec.
    pub generation: u32,
    /// After a fork, until the agent has copied the parent's regions to the child: the
    /// parent, whose regions the child's faults fall back to. 0 otherwise.
    pub parent_tgid: u32,
    /// The parent's generation at the fork.
    pub parent_generation: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<ScopeEntry>() == 16);

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
}
const _: () = assert!(core::mem::size_of::<PendingCall>() == 48);

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

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` integers with no padding (sizes asserted above).
    unsafe impl aya::Pod for super::Region {}
    unsafe impl aya::Pod for super::PendingCall {}
    unsafe impl aya::Pod for super::ScopeEntry {}
}

/// Slots of the table-version map: each counts the edits of the region table and the
/// scope map made by one writer, bumped after the edits (see the fault path's cache).
pub const TABLE_VERSION_KERNEL: u32 = 0;
pub const TABLE_VERSION_AGENT: u32 = 1;
pub const TABLE_VERSION_SLOTS: u32 = 2;
