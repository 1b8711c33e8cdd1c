//! A per-CPU memo of recent fault walks, so a fault in a loop (a function filling a
//! buffer: the common case) is counted in its tally without walking its stack again.
//!
//! A walk is a function of the registers it starts from, the unwind tables, and the
//! stack words it reads. A fault of the same process at the same pc, sp and bp, with
//! the same table versions, whose stack holds the same values at the places the walk
//! read, has the same stack. Checking that costs one copy of the stack (a walk copies
//! it too) and one compare per word read, instead of a row lookup per frame. The
//! frames are not kept: a fault that must go as a record walks.
//!
//! Kept only for walks that nothing but those inputs decided: not one that met a file
//! whose table was missing or not built yet (the agent adds tables without bumping the
//! versions), nor one that read more than `MEMO_READS` words, or words more than
//! `MEMO_SPAN` bytes above sp or not 8-aligned from it.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::bpf_probe_read_user as bpf_probe_read_user_raw;
use map_audit_common::{
    region::{TABLE_VERSION_AGENT, TABLE_VERSION_KERNEL},
    unwind::{STACK_END_COMPLETE, STACK_END_DEPTH_LIMIT},
};

use crate::{
    maps::{STACK_MEMOS, STACK_WINDOW, WINDOW_WORDS},
    region_cache::version,
};

/// Stack words a memoised walk may have read.
pub const MEMO_READS: usize = 32;
/// Memo slots per CPU (direct-mapped by pc and sp).
pub const MEMO_SLOTS: u32 = 64;
/// Bytes above sp a memoised walk may have read: the copy that checks it.
const MEMO_SPAN: u64 = (WINDOW_WORDS * 8) as u64;

/// Where a walk started, and the words it read (part of the walk's per-CPU state).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct WalkReads {
    ip: u64,
    sp: u64,
    bp: u64,
    count: u32,
    /// Zero once the walk read or met something the memo cannot check.
    checkable: u32,
    /// Byte offsets from sp.
    offsets: [u16; MEMO_READS],
    values: [u64; MEMO_READS],
}

impl WalkReads {
    #[inline(always)]
    pub fn start(&mut self, ip: u64, sp: u64, bp: u64) {
        self.ip = ip;
        self.sp = sp;
        self.bp = bp;
        self.count = 0;
        self.checkable = 1;
    }

    /// The walk read `value` at `address`.
    #[inline(always)]
    pub fn note(&mut self, address: u64, value: u64) {
        let offset = address.wrapping_sub(self.sp);
        // `offset` wraps for an address below sp: compared, never added to.
        if self.checkable == 0
            || offset & 7 != 0
            || offset > MEMO_SPAN - 8
            || self.count as usize >= MEMO_READS
        {
            self.checkable = 0;
            return;
        }
        let i = self.count as usize & (MEMO_READS - 1);
        self.offsets[i] = offset as u16;
        self.values[i] = value;
        self.count += 1;
    }

    /// The walk met something outside its registers, tables and stack words.
    #[inline(always)]
    pub fn spoil(&mut self) {
        self.checkable = 0;
    }
}

/// One memoised walk.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct StackMemo {
    key: MemoKey,
    hash: u64,
    end: u32,
    /// Bytes from sp the check copies.
    span: u32,
    reads: WalkReads,
}

/// What a memoised walk depends on besides its stack words.
#[repr(C)]
#[derive(Clone, Copy, PartialEq)]
struct MemoKey {
    ip: u64,
    sp: u64,
    bp: u64,
    kernel_version: u64,
    agent_version: u64,
    tgid: u32,
    generation: u32,
}

impl MemoKey {
    /// The key of a walk from (ip, sp, bp) with the table versions `(kernel, agent)`.
    #[inline(always)]
    fn of(tgid: u32, generation: u32, (ip, sp, bp): (u64, u64, u64), versions: (u64, u64)) -> Self {
        Self {
            ip,
            sp,
            bp,
            kernel_version: versions.0,
            agent_version: versions.1,
            tgid,
            generation,
        }
    }

    #[inline(always)]
    fn slot(&self) -> u32 {
        ((self.ip ^ (self.sp >> 4)) as u32) & (MEMO_SLOTS - 1)
    }
}

/// Keeps a fault walk of `tgid`'s tables (`generation`) that ended `end` with `hash`.
/// `versions`: the table versions the walk started with, so a table edit during the
/// walk (it bumps them after it is done) leaves the memo stale, never wrong.
#[inline(always)]
pub fn keep(
    tgid: u32,
    generation: u32,
    versions: (u64, u64),
    reads: &WalkReads,
    hash: u64,
    end: u32,
) {
    if reads.checkable == 0 || (end != STACK_END_COMPLETE && end != STACK_END_DEPTH_LIMIT) {
        return;
    }
    let key = MemoKey::of(tgid, generation, (reads.ip, reads.sp, reads.bp), versions);
    let Some(memo) = STACK_MEMOS.get_ptr_mut(key.slot()) else {
        return;
    };
    let memo = unsafe { &mut *memo };
    // Read offsets climb with the frames, but a signal frame's need not: the largest.
    let mut span = 8;
    for i in 0..MEMO_READS {
        if i as u32 >= reads.count {
            break;
        }
        span = span.max(u32::from(reads.offsets[i]) + 8);
    }
    memo.key = key;
    memo.hash = hash;
    memo.end = end;
    memo.span = span;
    memo.reads = *reads;
}

/// The (hash, end) of the walk a fault at (ip, sp, bp) of `tgid` would make, if this
/// CPU memoised it and the stack words it read are unchanged.
#[inline(always)]
pub fn recall(tgid: u32, generation: u32, ip: u64, sp: u64, bp: u64) -> Option<(u64, u32)> {
    let versions = (version(TABLE_VERSION_KERNEL), version(TABLE_VERSION_AGENT));
    let key = MemoKey::of(tgid, generation, (ip, sp, bp), versions);
    let memo = STACK_MEMOS.get_ptr(key.slot())?;
    let memo = unsafe { &*memo };
    if memo.key != key {
        return None;
    }
    let words = STACK_WINDOW.get_ptr_mut(0)?;
    // 1 to MEMO_SPAN bytes, in a form the verifier can bound.
    let len = ((memo.span.wrapping_sub(1)) & (MEMO_SPAN as u32 - 1)) + 1;
    if unsafe { bpf_probe_read_user_raw(words.cast(), len, sp as *const c_void) } != 0 {
        return None;
    }
    let reads = &memo.reads;
    for i in 0..MEMO_READS {
        if i as u32 >= reads.count {
            break;
        }
        let word = (usize::from(reads.offsets[i]) / 8) & (WINDOW_WORDS - 1);
        if unsafe { (*words)[word] } != reads.values[i] {
            return None;
        }
    }
    Some((memo.hash, memo.end))
}
