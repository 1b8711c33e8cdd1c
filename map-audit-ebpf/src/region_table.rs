//! The kernel's table of the mappings of in-scope processes: an LPM trie keyed by
//! (tgid, address) where a region is stored as its aligned blocks (see
//! `map_audit_common::blocks`), so a fault anywhere inside it is one longest-prefix
//! lookup. Loops run under `bpf_loop` (5.17+) so the verifier checks each body once.

use core::ffi::c_void;

use aya_ebpf::{helpers::generated::bpf_loop, maps::lpm_trie::Key};
use map_audit_common::{
    blocks::{MAX_BLOCKS, block_order},
    counters::{FAULTS_MATCHED_VIA_PARENT, RANGES_HANDED_TO_AGENT, REGION_TABLE_FULL},
    records::{
        KIND_PROTECT_UNRESOLVED, KIND_REGION_PROTECTED, KIND_REGION_UNMAPPED, KIND_UNMAP_UNRESOLVED,
    },
    region::{LOOKUP_PREFIX_LEN, Region, ScopeEntry, block_prefix_len, region_key_data},
};

use crate::{
    counters::bump,
    maps::{ID_SEQUENCE, REGIONS, TABLE_EDIT},
    records, region_cache,
};

/// Steps of one range walk (regions handled plus gap blocks skipped); beyond it the
/// agent finishes the range.
const RANGE_WALK_STEPS: u32 = 256;

/// `RangeWalk::new_prot` for an unmap.
const UNMAP: u32 = u32::MAX;

/// A fresh id for a region or a scope generation, unique for the agent's lifetime.
#[inline(always)]
pub fn next_id() -> u64 {
    match ID_SEQUENCE.get_ptr_mut(0) {
        // Fetch-and-add (BPF CPU v3), written out: the compiler's atomic intrinsic
        // emits a plain add here and then treats its operand as the old value.
        Some(seq) => {
            let mut value: u64 = 1;
            unsafe {
                core::arch::asm!(
                    "{value} = atomic_fetch_add((u64 *)({seq} + 0), {value})",
                    value = inout(reg) value,
                    seq = in(reg) seq,
                );
            }
            value + 1
        }
        None => 0,
    }
}

#[inline(always)]
fn lookup(tgid: u32, address: u64) -> Option<&'static Region> {
    REGIONS.get(Key::new(LOOKUP_PREFIX_LEN, region_key_data(tgid, address)))
}

/// The region of the current generation of `tgid` containing `address`.
#[inline(always)]
fn lookup_current(tgid: u32, generation: u32, address: u64) -> Option<Region> {
    lookup(tgid, address)
        .filter(|r| r.generation == generation)
        .copied()
}

/// The region a fault at `address` falls in, and whether it is the process's own: else,
/// right after a fork the agent has not caught up with, it is its parent's (the child's
/// copy as of the fork).
#[inline(always)]
pub fn lookup_for_fault(tgid: u32, scope: &ScopeEntry, address: u64) -> Option<(Region, bool)> {
    if let Some(region) = lookup_current(tgid, scope.generation, address) {
        return Some((region, true));
    }
    if scope.parent_tgid == 0 {
        return None;
    }
    let region = lookup_current(scope.parent_tgid, scope.parent_generation, address)?;
    bump(FAULTS_MATCHED_VIA_PARENT);
    Some((region, false))
}

/// One change to the table: the blocks of `[start, end)`, removed or inserted (as a
/// piece of the edit's region with protection `prot`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct BlockOp {
    start: u64,
    end: u64,
    prot: u32,
    insert: u32,
}

/// Up to four block operations on one region, applied by a single `bpf_loop`: every
/// table change goes through this one callback, which keeps verification cheap. It
/// lives in the per-CPU `TABLE_EDIT` scratch, not on the stack: 6.1 caps the stack of
/// a program and its nested callbacks at 512 bytes together. Only syscall tracepoint
/// programs edit the table, and one CPU never runs two of them at once (the kernel
/// skips a tracepoint program while another is active on its CPU), so no edit sees
/// another's half.
#[repr(C)]
pub struct TableEdit {
    tgid: u32,
    ops_len: u32,
    op: u32,
    _pad: u32,
    cursor: u64,
    region: Region,
    ops: [BlockOp; 4],
}

impl TableEdit {
    /// This CPU's edit, emptied, for `region` of `tgid`.
    #[inline(always)]
    fn start(tgid: u32, region: &Region) -> Option<&'static mut Self> {
        // Index 0 of a per-CPU array always exists.
        let edit = unsafe { &mut *TABLE_EDIT.get_ptr_mut(0)? };
        edit.tgid = tgid;
        edit.ops_len = 0;
        edit.op = 0;
        edit.cursor = 0;
        edit.region = *region;
        Some(edit)
    }

    #[inline(always)]
    fn push(&mut self, start: u64, end: u64, prot: u32, insert: bool) {
        if self.ops_len as usize >= self.ops.len() {
            return;
        }
        self.ops[op_index(self.ops_len)] = BlockOp {
            start,
            end,
            prot,
            insert: u32::from(insert),
        };
        self.ops_len += 1;
    }

    #[inline(always)]
    fn apply(&mut self) {
        if self.ops_len == 0 {
            return;
        }
        self.cursor = self.ops[0].start;
        unsafe {
            bpf_loop(
                4 * MAX_BLOCKS as u32,
                edit_step as *mut c_void,
                core::ptr::null_mut(),
                0,
            );
        }
        region_cache::tables_changed();
    }
}

/// `i` as an index into `TableEdit::ops`, masked: callers check the bound, but the 6.1
/// verifier loses a checked bound on the way to a map-value access.
#[inline(always)]
fn op_index(i: u32) -> usize {
    (i & 3) as usize
}

#[inline(never)]
extern "C" fn edit_step(_index: u64, _ctx: *mut c_void) -> i64 {
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
        region_key_data(edit.tgid, edit.cursor),
    );
    if op.insert != 0 {
        let piece = Region {
            start: op.start,
            end: op.end,
            file_offset: edit.region.file_offset + (op.start - edit.region.start),
            prot: op.prot,
            ..edit.region
        };
        if REGIONS.insert(&key, &piece, 0).is_err() {
            bump(REGION_TABLE_FULL);
        }
    } else {
        // Missing is fine: the agent may have removed it at process exit.
        let _ = REGIONS.remove(&key);
    }
    edit.cursor += 1u64 << order;
    0
}

/// Adds `region` for `tgid`. Blocks that do not fit are counted, not silently lost.
#[inline(always)]
pub fn insert(tgid: u32, region: &Region) {
    let Some(edit) = TableEdit::start(tgid, region) else {
        return;
    };
    edit.push(region.start, region.end, region.prot, true);
    edit.apply();
}

/// State of an unmap or mprotect walk, shared with its `bpf_loop` callback.
#[repr(C)]
struct RangeWalk {
    tgid: u32,
    generation: u32,
    start: u64,
    end: u64,
    cursor: u64,
    /// The mprotect's new prot, or `UNMAP`.
    new_prot: u32,
    /// Non-zero once a gap was skipped: a region may start inside a skipped block.
    skipped_gap: u32,
}

/// Takes `[start, end)` out of the table: whole regions are removed, regions that
/// straddle a boundary are trimmed (pieces keep their id); each is reported.
#[inline(always)]
pub fn unmap_range(tgid: u32, generation: u32, start: u64, end: u64) {
    walk_range(tgid, generation, start, end, UNMAP);
}

/// Gives `[start, end)` the protection `prot`, splitting regions at the boundaries.
#[inline(always)]
pub fn protect_range(tgid: u32, generation: u32, start: u64, end: u64, prot: u32) {
    walk_range(tgid, generation, start, end, prot);
}

/// The walk looks regions up at its cursor and jumps over gaps block by block, so a
/// region that starts inside a skipped gap block is invisible to it. When any gap was
/// skipped (or steps ran out) the range goes to the agent, which finishes the job from
/// its own copy of the table.
#[inline(always)]
fn walk_range(tgid: u32, generation: u32, start: u64, end: u64, new_prot: u32) {
    let mut walk = RangeWalk {
        tgid,
        generation,
        start,
        end,
        cursor: start,
        new_prot,
        skipped_gap: 0,
    };
    unsafe {
        bpf_loop(
            RANGE_WALK_STEPS,
            range_step as *mut c_void,
            (&raw mut walk).cast(),
            0,
        );
    }
    if walk.skipped_gap != 0 || walk.cursor < end {
        bump(RANGES_HANDED_TO_AGENT);
        if new_prot == UNMAP {
            records::range_unresolved(KIND_UNMAP_UNRESOLVED, start, end, 0);
        } else {
            records::range_unresolved(KIND_PROTECT_UNRESOLVED, start, end, new_prot);
        }
    }
}

#[inline(never)]
extern "C" fn range_step(_index: u64, ctx: *mut c_void) -> i64 {
    let walk = unsafe { &mut *ctx.cast::<RangeWalk>() };
    if walk.cursor >= walk.end {
        return 1;
    }
    match lookup_current(walk.tgid, walk.generation, walk.cursor) {
        Some(region) => {
            change_region(walk, &region);
            walk.cursor = region.end;
        }
        None => {
            walk.skipped_gap = 1;
            walk.cursor += 1u64 << block_order(walk.cursor, walk.end);
        }
    }
    0
}

#[inline(always)]
fn change_region(walk: &RangeWalk, region: &Region) {
    if walk.new_prot == region.prot {
        return;
    }
    let cut_start = if region.start > walk.start {
        region.start
    } else {
        walk.start
    };
    let cut_end = if region.end < walk.end {
        region.end
    } else {
        walk.end
    };
    let Some(edit) = TableEdit::start(walk.tgid, region) else {
        return;
    };
    edit.push(region.start, region.end, region.prot, false);
    if region.start < cut_start {
        edit.push(region.start, cut_start, region.prot, true);
    }
    if cut_end < region.end {
        edit.push(cut_end, region.end, region.prot, true);
    }
    if walk.new_prot != UNMAP {
        edit.push(cut_start, cut_end, walk.new_prot, true);
    }
    edit.apply();
    if walk.new_prot == UNMAP {
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
