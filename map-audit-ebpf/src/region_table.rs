//! The kernel's table of the mappings of in-scope processes: an LPM trie keyed by
//! (tgid, generation, address) where a region is stored as its aligned blocks (see
//! `map_audit_common::blocks`), so a fault anywhere inside it is one longest-prefix
//! lookup. Loops run under `bpf_loop` (5.17+) so the verifier checks each body once.
//!
//! Edits never leave a hole a concurrent fault could fall through: the blocks of what
//! replaces a region go in first, then the region's own blocks that still hold it come
//! out. A range change made at a system call's exit applies only to regions older than
//! the call (`change_applies`), since another thread may have mapped the range again
//! between the call's effect and its exit.

use aya_ebpf::maps::lpm_trie::Key;
use map_audit_common::{
    blocks::{MAX_BLOCKS, block_order},
    counters::{
        FAULTS_MATCHED_VIA_PARENT, FAULTS_UNATTRIBUTED_AFTER_FORK, RANGES_HANDED_TO_AGENT,
        REGION_TABLE_FULL,
    },
    records::{
        KIND_PROTECT_UNRESOLVED, KIND_REGION_PROTECTED, KIND_REGION_UNMAPPED, KIND_UNMAP_UNRESOLVED,
    },
    region::{
        ForkFallback, LOOKUP_PREFIX_LEN, Region, SCOPE_FORKED, ScopeEntry, block_prefix_len,
        change_applies, region_key_data,
    },
    region_split::{UNMAP, changes, for_each_piece},
};

use crate::{
    counters::bump,
    loops,
    maps::{FORK_FALLBACKS, RANGE_WALK, REGIONS, TABLE_EDIT},
    records, region_cache, scope,
    user_stack::Tables,
};

/// Steps of one range walk (regions handled plus gap blocks skipped); beyond it the
/// agent finishes the range.
const RANGE_WALK_STEPS: u32 = loops::bound(256, 2);

/// The region of `tgid`'s generation `generation` containing `address`.
#[inline(always)]
pub fn lookup(tgid: u32, generation: u32, address: u64) -> Option<Region> {
    lookup_ref(tgid, generation, address).copied()
}

/// `lookup` without the copy (48 bytes of a 512-byte stack).
#[inline(always)]
pub fn lookup_ref(tgid: u32, generation: u32, address: u64) -> Option<&'static Region> {
    REGIONS.get(Key::new(
        LOOKUP_PREFIX_LEN,
        region_key_data(tgid, generation, address),
    ))
}

/// The region a fault at `address` falls in, and whether it is the process's own: else,
/// right after a fork the agent has not caught up with, it is its parent's (as of the
/// fork: regions the parent made since are newer than the child).
#[inline(always)]
pub fn lookup_for_fault(tgid: u32, scope: &ScopeEntry, address: u64) -> Option<(Region, bool)> {
    if let Some(region) = lookup(tgid, scope.generation, address) {
        return Some((region, true));
    }
    if scope.flags & SCOPE_FORKED == 0 {
        return None;
    }
    let fallback = unsafe { FORK_FALLBACKS.get(tgid) }.copied()?;
    if fallback.child_generation != scope.generation {
        return None;
    }
    match parent_lookup(&fallback, address) {
        Some(region) => {
            bump(FAULTS_MATCHED_VIA_PARENT);
            Some((*region, false))
        }
        None => {
            // A parent that changed its table since the fork may have dropped a
            // region the child still has: say so instead of missing it silently.
            let parent_unchanged = scope::get(fallback.parent_tgid).is_some_and(|parent| {
                parent.generation == fallback.parent_generation
                    && parent.edits == fallback.parent_edits
            });
            if !parent_unchanged {
                bump(FAULTS_UNATTRIBUTED_AFTER_FORK);
            }
            None
        }
    }
}

/// The region of a forked child's parent containing `address`, as it was at the fork
/// (regions the parent made since are newer than the child).
#[inline(always)]
fn parent_lookup(fallback: &ForkFallback, address: u64) -> Option<&'static Region> {
    lookup_ref(fallback.parent_tgid, fallback.parent_generation, address)
        .filter(|region| change_applies(region, fallback.fork_seq))
}

/// The region containing code at `pc` for a walk in `tgid`'s generation `generation`:
/// its own, else, while the agent has not copied a fork's regions yet, its parent's.
/// A child that maps memory before the copy (malloc's brk) has a few regions of its
/// own but its code only in its parent's table.
#[inline(always)]
pub fn lookup_code(tgid: u32, generation: u32, pc: u64) -> Option<&'static Region> {
    if let Some(region) = lookup_ref(tgid, generation, pc) {
        return Some(region);
    }
    let fallback = unsafe { FORK_FALLBACKS.get(tgid) }?;
    if fallback.child_generation != generation {
        return None;
    }
    parent_lookup(fallback, pc)
}

/// Whose unwind tables a walk in `tgid` uses, its region found in its own table
/// (`own`) or, right after a fork, in its parent's: the child has no regions of its
/// own yet, so its code is only found in the parent's.
#[inline(always)]
pub fn walk_tables(tgid: u32, region: &Region, own: bool) -> Tables {
    if !own && let Some(fallback) = unsafe { FORK_FALLBACKS.get(tgid) } {
        return Tables::Of {
            tgid: fallback.parent_tgid,
            generation: fallback.parent_generation,
        };
    }
    Tables::Of {
        tgid,
        generation: region.generation,
    }
}

/// `BlockOp::kind`: insert the blocks of `[start, end)` as a piece of the edit's region.
const OP_INSERT: u32 = 1;
/// `BlockOp::kind`: remove the blocks of `[start, end)` that still hold the edit's
/// region exactly (not a piece inserted in their place).
const OP_REMOVE_IF_UNCHANGED: u32 = 0;

/// One change to the table: the blocks of `[start, end)`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct BlockOp {
    start: u64,
    end: u64,
    prot: u32,
    kind: u32,
}

/// Up to four block operations on one region, applied by a single `bpf_loop`: every
/// table change goes through this one callback, which keeps verification cheap. It
/// lives in the per-CPU `TABLE_EDIT` scratch, not on the stack: 6.1 caps the stack of
/// a program and its nested callbacks at 512 bytes together. Only syscall and exec
/// tracepoint programs edit the table, and one CPU never runs two of them at once (the
/// kernel skips a tracepoint program while another is active on its CPU), so no edit
/// sees another's half.
#[repr(C)]
pub struct TableEdit {
    tgid: u32,
    generation: u32,
    ops_len: u32,
    op: u32,
    /// Whether this edit removed the region's block at `claim` (the start of an unmap's
    /// cut, which no piece covers): two threads' calls on one range may both find the
    /// region, and only the one whose edit removed that block reports it.
    claimed: u32,
    _pad: u32,
    claim: u64,
    cursor: u64,
    region: Region,
    /// The piece `edit_step` inserts, built here rather than on the stack.
    piece: Region,
    ops: [BlockOp; 4],
}

/// This CPU's `TableEdit`, through a raw pointer: the `bpf_loop` callback reads the
/// same per-CPU value, so no `&mut` to it may live across the call (the compiler could
/// then assume the call sees none of its stores, and keep or drop them: an edit applied
/// with the previous edit's region was seen).
#[derive(Clone, Copy)]
struct EditHandle(*mut TableEdit);

impl EditHandle {
    /// This CPU's edit, emptied, for `region` of `tgid`.
    #[inline(always)]
    fn start(tgid: u32, region: &Region) -> Option<Self> {
        // Index 0 of a per-CPU array always exists.
        let edit = TABLE_EDIT.get_ptr_mut(0)?;
        unsafe {
            (*edit).tgid = tgid;
            (*edit).generation = region.generation;
            (*edit).ops_len = 0;
            (*edit).op = 0;
            (*edit).claimed = 0;
            (*edit).claim = region.start;
            (*edit).cursor = 0;
            (*edit).region = *region;
        }
        Some(Self(edit))
    }

    #[inline(always)]
    fn push(self, start: u64, end: u64, prot: u32, kind: u32) {
        let edit = self.0;
        unsafe {
            let len = (*edit).ops_len;
            if len as usize >= (*edit).ops.len() {
                return;
            }
            (*edit).ops[op_index(len)] = BlockOp {
                start,
                end,
                prot,
                kind,
            };
            (*edit).ops_len = len + 1;
        }
    }

    /// The unmap's cut starts at `address` (see `TableEdit::claimed`).
    #[inline(always)]
    fn claim_at(self, address: u64) {
        unsafe { (*self.0).claim = address };
    }

    #[inline(always)]
    fn claimed(self) -> bool {
        unsafe { core::ptr::read_volatile(&raw const (*self.0).claimed) != 0 }
    }

    #[inline(always)]
    fn apply(self) {
        let edit = self.0;
        let tgid = unsafe {
            if (*edit).ops_len == 0 {
                return;
            }
            (*edit).cursor = (*edit).ops[0].start;
            (*edit).tgid
        };
        let steps = 4 * MAX_BLOCKS as u32;
        loops::repeat(steps, steps, edit_step);
        region_cache::tables_changed();
        scope::count_edit(tgid);
    }
}

/// `i` as an index into `TableEdit::ops`, masked: callers check the bound, but the 6.1
/// verifier loses a checked bound on the way to a map-value access.
#[inline(always)]
fn op_index(i: u32) -> usize {
    (i & 3) as usize
}

loops::step! {
    fn edit_step(_index) -> i64 {
        let Some(edit) = TABLE_EDIT.get_ptr_mut(0) else {
            return 1;
        };
        let edit = unsafe { &mut *edit };
        if edit.op as usize >= edit.ops.len() || edit.op >= edit.ops_len {
            return 1;
        }
        let op = edit.ops[op_index(edit.op)];
        if edit.cursor >= op.end {
            edit.op += 1;
            // Read back: the compiler would otherwise index with `op + 1`, whose bound the
            // 6.1 verifier cannot tie to the check on `op`.
            let next = unsafe { core::ptr::read_volatile(&edit.op) };
            if (next as usize) < edit.ops.len() {
                edit.cursor = edit.ops[op_index(next)].start;
            }
            return 0;
        }
        let order = block_order(edit.cursor, op.end);
        let key = Key::new(
            block_prefix_len(order),
            region_key_data(edit.tgid, edit.generation, edit.cursor),
        );
        if op.kind == OP_INSERT {
            edit.piece = Region {
                start: op.start,
                end: op.end,
                file_offset: edit.region.file_offset + (op.start - edit.region.start),
                prot: op.prot,
                ..edit.region
            };
            if REGIONS.insert(&key, &edit.piece, 0).is_err() {
                bump(REGION_TABLE_FULL);
            }
        } else if REGIONS.get(&key).is_some_and(|found| {
            found.id == edit.region.id
                && found.start == edit.region.start
                && found.end == edit.region.end
                && found.prot == edit.region.prot
        }) {
            // Missing is fine: the agent may have removed it at process exit.
            if REGIONS.remove(&key).is_ok()
                && edit.cursor <= edit.claim
                && edit.claim - edit.cursor < 1u64 << order
            {
                edit.claimed = 1;
            }
        }
        edit.cursor += 1u64 << order;
        0
    }
}

/// Adds `region` for `tgid` (in `region.generation`). Blocks that do not fit are
/// counted, not silently lost.
#[inline(always)]
pub fn insert(tgid: u32, region: &Region) {
    let Some(edit) = EditHandle::start(tgid, region) else {
        return;
    };
    edit.push(region.start, region.end, region.prot, OP_INSERT);
    edit.apply();
}

/// Replaces `old` by `new` (the same region grown or shrunk in place, like the heap).
#[inline(always)]
pub fn replace(tgid: u32, old: &Region, new: &Region) {
    let Some(edit) = EditHandle::start(tgid, old) else {
        return;
    };
    edit.push(new.start, new.end, new.prot, OP_INSERT);
    edit.push(old.start, old.end, old.prot, OP_REMOVE_IF_UNCHANGED);
    edit.apply();
}

/// State of an unmap or mprotect walk, shared with its `bpf_loop` callback. In the
/// per-CPU `RANGE_WALK`, not on the stack: 6.1 caps a program's stack and its nested
/// callbacks' at 512 bytes together, and the mmap exit came to 544.
#[repr(C)]
pub struct RangeWalk {
    tgid: u32,
    generation: u32,
    start: u64,
    end: u64,
    cursor: u64,
    /// The call's `PendingCall::seq`.
    seq: u64,
    /// The mprotect's new prot, or `UNMAP`.
    new_prot: u32,
    /// Non-zero once a gap was skipped (a region may start inside it), or a region
    /// newer than the call was stepped over: the agent finishes the range.
    handed_over: u32,
    /// The region at the cursor (a copy: the edit changes the table under it).
    found: Region,
}

/// Takes `[start, end)` out of the table: whole regions are removed, regions that
/// straddle a boundary are trimmed (pieces keep their id); each is reported.
#[inline(always)]
pub fn unmap_range(tgid: u32, generation: u32, start: u64, end: u64, seq: u64) {
    walk_range(tgid, generation, start, end, UNMAP, seq);
}

/// Gives `[start, end)` the protection `prot`, splitting regions at the boundaries.
#[inline(always)]
pub fn protect_range(tgid: u32, generation: u32, start: u64, end: u64, prot: u32, seq: u64) {
    walk_range(tgid, generation, start, end, prot, seq);
}

/// The walk looks regions up at its cursor and jumps over gaps block by block, so a
/// region that starts inside a skipped gap block is invisible to it. When any gap was
/// skipped (or steps ran out) the range goes to the agent, which finishes the job from
/// its own copy of the table.
#[inline(always)]
fn walk_range(tgid: u32, generation: u32, start: u64, end: u64, new_prot: u32, seq: u64) {
    // Through a raw pointer: the callback changes the same per-CPU value.
    let Some(walk) = RANGE_WALK.get_ptr_mut(0) else {
        return;
    };
    unsafe {
        *walk = RangeWalk {
            tgid,
            generation,
            start,
            end,
            cursor: start,
            seq,
            new_prot,
            handed_over: 0,
            found: Region::default(),
        };
    }
    loops::repeat(RANGE_WALK_STEPS, RANGE_WALK_STEPS, range_step);
    let (handed_over, cursor) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*walk).handed_over),
            core::ptr::read_volatile(&raw const (*walk).cursor),
        )
    };
    if handed_over != 0 || cursor < end {
        bump(RANGES_HANDED_TO_AGENT);
        scope::count_edit(tgid);
        let kind = if new_prot == UNMAP {
            KIND_UNMAP_UNRESOLVED
        } else {
            KIND_PROTECT_UNRESOLVED
        };
        records::range_unresolved(
            kind,
            start,
            end,
            if new_prot == UNMAP { 0 } else { new_prot },
            seq,
        );
    }
}

loops::step! {
    fn range_step(_index) -> i64 {
        let Some(walk) = RANGE_WALK.get_ptr_mut(0) else {
            return 1;
        };
        let walk = unsafe { &mut *walk };
        if walk.cursor >= walk.end {
            return 1;
        }
        match lookup_ref(walk.tgid, walk.generation, walk.cursor) {
            Some(region) => {
                walk.found = *region;
                if change_applies(&walk.found, walk.seq) {
                    change_region(walk);
                } else {
                    // Mapped after this call began: not this call's to change, but an
                    // older region may hide under it.
                    walk.handed_over = 1;
                }
                walk.cursor = walk.found.end;
            }
            None => {
                walk.handed_over = 1;
                walk.cursor += 1u64 << block_order(walk.cursor, walk.end);
            }
        }
        0
    }
}

#[inline(always)]
fn change_region(walk: &RangeWalk) {
    let region = &walk.found;
    if !changes(region, walk.new_prot) {
        return;
    }
    let Some(edit) = EditHandle::start(walk.tgid, region) else {
        return;
    };
    let (cut_start, cut_end) = for_each_piece(region, walk.start, walk.end, walk.new_prot, |p| {
        edit.push(p.start, p.end, p.prot, OP_INSERT)
    });
    edit.push(
        region.start,
        region.end,
        region.prot,
        OP_REMOVE_IF_UNCHANGED,
    );
    edit.claim_at(cut_start);
    edit.apply();
    if walk.new_prot == UNMAP {
        if !edit.claimed() {
            return; // another CPU's unmap of this region removed it, and reports it
        }
        records::region_change(KIND_REGION_UNMAPPED, region, cut_start, cut_end, 0);
    } else {
        records::region_change(
            KIND_REGION_PROTECTED,
            region,
            cut_start,
            cut_end,
            walk.new_prot,
        );
    }
}
