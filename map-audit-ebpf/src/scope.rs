//! Which processes are audited. Decided here so that out-of-scope events cost one
//! hash lookup and never reach the agent. Only the kernel writes entries of running
//! processes: the agent inserts with `BPF_NOEXIST` and never updates them.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_EXIST, BPF_NOEXIST},
    helpers::{bpf_get_current_comm, generated::bpf_get_current_ancestor_cgroup_id},
};
use map_audit_common::{
    counters::{SCOPE_ADDED, SCOPE_TABLE_FULL, TABLE_LOCK_TIMEOUTS},
    region::ScopeEntry,
};

use crate::{
    counters::{add_one, bump},
    id_sequence, loops,
    maps::{self, FORK_FALLBACKS, SCOPE},
    region_cache,
};

/// The scope entry of `tgid`, if audited. The first check of every hook.
#[inline(always)]
pub fn get(tgid: u32) -> Option<ScopeEntry> {
    unsafe { SCOPE.get(tgid) }.copied()
}

/// Puts `tgid` in scope with a fresh generation: a forked child (`flags`
/// `SCOPE_FORKED`), or a process adopted at its first mmap. `BPF_NOEXIST` for an
/// adoption: two threads' first mmaps race, and the second must not replace the
/// generation the first one's region was made in. Returns the entry in the table.
#[inline(always)]
pub fn add(tgid: u32, flags: u32) -> Option<ScopeEntry> {
    let entry = ScopeEntry {
        generation: id_sequence::next_generation(),
        flags,
        ..ScopeEntry::default()
    };
    let insert_flags = if flags == 0 { BPF_NOEXIST } else { BPF_ANY };
    match SCOPE.insert(tgid, entry, insert_flags.into()) {
        Ok(()) => {
            region_cache::tables_changed();
            bump(SCOPE_ADDED);
            Some(entry)
        }
        Err(_) => match get(tgid) {
            Some(existing) => Some(existing),
            None => {
                bump(SCOPE_TABLE_FULL);
                None
            }
        },
    }
}

/// A new generation for an exec: the old image's regions stop matching at once.
#[inline(always)]
pub fn renew(tgid: u32, old: &ScopeEntry) -> Option<ScopeEntry> {
    let entry = ScopeEntry {
        generation: id_sequence::next_generation(),
        edits: old.edits + 1,
        ..ScopeEntry::default()
    };
    let _ = FORK_FALLBACKS.remove(tgid);
    SCOPE.insert(tgid, entry, BPF_EXIST.into()).ok()?;
    region_cache::tables_changed();
    Some(entry)
}

/// The process is gone.
#[inline(always)]
pub fn remove(tgid: u32) {
    let _ = SCOPE.remove(tgid);
    let _ = FORK_FALLBACKS.remove(tgid);
    region_cache::tables_changed();
}

/// Counts a change of `tgid`'s regions (see `ScopeEntry::edits`).
#[inline(always)]
pub fn count_edit(tgid: u32) {
    if let Some(entry) = SCOPE.get_ptr_mut(tgid) {
        unsafe { add_one(&raw mut (*entry).edits) };
    }
}

/// Spins of `lock_table` before it gives up (each is one compare-and-swap; the edits
/// it waits for take microseconds).
const LOCK_SPINS: u32 = loops::bound(1 << 16, 256);

/// Holds `ScopeEntry::edit_lock` of a process while its regions are edited.
pub struct TableLock {
    word: *mut u64,
}

impl Drop for TableLock {
    fn drop(&mut self) {
        if self.word.is_null() {
            return;
        }
        // Older kernels' lock word counts attempts in progress too (`try_lock`).
        #[cfg(feature = "kernel-5-10")]
        unsafe {
            crate::counters::sub_one(self.word)
        };
        #[cfg(not(feature = "kernel-5-10"))]
        unsafe {
            core::ptr::write_volatile(self.word, 0)
        };
    }
}

/// Takes `tgid`'s edit lock, waiting for another thread's edit to finish. If that
/// takes too long (its program was preempted), the edit goes ahead and is counted.
#[inline(always)]
pub fn lock_table(tgid: u32) -> TableLock {
    let mut attempt = LockAttempt { tgid, held: 0 };
    loops::repeat_with(LOCK_SPINS, try_lock, (&raw mut attempt).cast());
    let word = match SCOPE.get_ptr_mut(tgid) {
        Some(entry) if attempt.held != 0 => unsafe { &raw mut (*entry).edit_lock },
        _ => core::ptr::null_mut(),
    };
    if attempt.held == 0 {
        bump(TABLE_LOCK_TIMEOUTS);
    }
    TableLock { word }
}

#[repr(C)]
struct LockAttempt {
    tgid: u32,
    held: u32,
}

/// One attempt to take the lock word; stops the loop once it is held (or the process
/// has left the scope: nothing to lock).
#[inline(never)]
extern "C" fn try_lock(_index: u64, ctx: *mut c_void) -> i64 {
    let attempt = unsafe { &mut *ctx.cast::<LockAttempt>() };
    let Some(entry) = SCOPE.get_ptr_mut(attempt.tgid) else {
        attempt.held = 1;
        return 1;
    };
    let word = unsafe { &raw mut (*entry).edit_lock };
    if unsafe { take(word) } {
        attempt.held = 1;
        1
    } else {
        0
    }
}

/// A compare-and-swap of the lock word, 0 -> 1.
#[cfg(not(feature = "kernel-5-10"))]
#[inline(always)]
unsafe fn take(word: *mut u64) -> bool {
    let mut old: u64 = 0;
    unsafe {
        core::arch::asm!(
            "r0 = cmpxchg_64({word} + 0, r0, {new})",
            word = in(reg) word,
            new = in(reg) 1u64,
            inout("r0") old,
        );
    }
    old == 0
}

/// Before 5.12 there is no compare-and-swap, only an add without result: add one, read
/// the word back, and hold the lock if it is one (no other holder or attempt in
/// between), else take the one back. Two attempts that overlap may both give up and
/// spin again; two can never both read one.
#[cfg(feature = "kernel-5-10")]
#[inline(always)]
unsafe fn take(word: *mut u64) -> bool {
    unsafe {
        add_one(word);
        if core::ptr::read_volatile(word) == 1 {
            return true;
        }
        crate::counters::sub_one(word);
    }
    false
}

/// Scope check for the mmap hook: a process not yet in scope joins it under `--all`,
/// when it is in the `--cgroup` tree, or when its comm matches a `--comm`.
#[inline(always)]
pub fn get_or_adopt(tgid: u32) -> Option<ScopeEntry> {
    if let Some(entry) = get(tgid) {
        return Some(entry);
    }
    if adoptable(tgid) { add(tgid, 0) } else { None }
}

#[inline(always)]
fn adoptable(tgid: u32) -> bool {
    let config = maps::agent_config();
    if tgid == config.agent_tgid {
        return false;
    }
    if config.scope_all != 0 {
        return true;
    }
    if config.match_cgroups != 0 && in_scoped_cgroup() {
        return true;
    }
    config.match_comm != 0
        && bpf_get_current_comm().is_ok_and(|comm| maps::SCOPE_COMMS.get_ptr(comm).is_some())
}

/// Cgroup levels checked (a container's scope sits 2 to 6 levels down).
const MAX_CGROUP_LEVEL: u32 = 16;

/// Whether the current thread is in the tree of a `SCOPE_CGROUPS` cgroup: its ancestor
/// at each level some entry is at, looked up. In a `bpf_loop` callback, verified once:
/// unrolled, the 16 levels multiplied the mmap exit's paths past the verifier's limit.
#[inline(always)]
fn in_scoped_cgroup() -> bool {
    let mut search = CgroupSearch {
        levels: maps::SCOPE_CGROUP_LEVELS.get(0).copied().unwrap_or(0),
        found: 0,
    };
    loops::repeat_with(
        MAX_CGROUP_LEVEL,
        check_cgroup_level,
        (&raw mut search).cast(),
    );
    search.found != 0
}

#[repr(C)]
struct CgroupSearch {
    /// Bit N set: some scoped cgroup is at level N.
    levels: u32,
    found: u32,
}

/// One level of `in_scoped_cgroup`; stops the loop at a scoped ancestor.
#[inline(never)]
extern "C" fn check_cgroup_level(level: u64, ctx: *mut c_void) -> i64 {
    let search = unsafe { &mut *ctx.cast::<CgroupSearch>() };
    if (search.levels >> (level & 31)) & 1 == 0 {
        return 0;
    }
    let id = unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
    if unsafe { maps::SCOPE_CGROUPS.get(&id) }.is_some() {
        search.found = 1;
        return 1;
    }
    0
}
