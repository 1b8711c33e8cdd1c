//! The kernel's table of writable regions: an LPM trie keyed by (tgid, address) where a
//! region is stored as its aligned blocks (see `map_audit_common::blocks`), so a fault
//! anywhere inside it is one longest-prefix lookup.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, generated::bpf_loop},
    maps::lpm_trie::Key,
};
use map_audit_common::{
    blocks::{MAX_BLOCKS, block_order},
    counters::{REGION_TABLE_FULL, UNMAP_HANDED_TO_AGENT},
    region::{LOOKUP_PREFIX_LEN, Region, RegionKeyData, block_prefix_len, region_key_data},
};

use crate::{
    counters::bump,
    maps::{REGION_SEQ, REGIONS},
    records,
};

/// Steps of one unmap walk (regions handled plus gap blocks skipped); beyond it the
/// agent finishes the range.
const UNMAP_WALK_STEPS: u32 = 256;

/// The region of `tgid` containing `address`, if tracked.
#[inline(always)]
pub fn lookup(tgid: u32, address: u64) -> Option<&'static Region> {
    REGIONS.get(Key::new(LOOKUP_PREFIX_LEN, region_key_data(tgid, address)))
}

/// A fresh region id, unique across CPUs: per-CPU sequence and CPU number.
#[inline(always)]
pub fn next_region_id() -> u64 {
    let cpu = unsafe { bpf_get_smp_processor_id() } as u64;
    match REGION_SEQ.get_ptr_mut(0) {
        Some(seq) => unsafe {
            *seq += 1;
            (*seq << 12) | (cpu & 0xfff)
        },
        None => cpu,
    }
}

/// State of one block-by-block pass over a range, shared with the `bpf_loop` callbacks.
#[repr(C)]
struct BlockWalk {
    tgid: u32,
    _pad: u32,
    cursor: u64,
    end: u64,
    region: Region,
}

/// Adds `region` for `tgid`. Blocks that do not fit are counted, not silently lost.
#[inline(always)]
pub fn insert(tgid: u32, region: &Region) {
    let mut walk = BlockWalk {
        tgid,
        _pad: 0,
        cursor: region.start,
        end: region.end,
        region: *region,
    };
    for_each_block(&mut walk, insert_block);
}

/// Removes the blocks of `[start, end)` for `tgid` (exactly the blocks `insert` made).
#[inline(always)]
fn remove_blocks(tgid: u32, start: u64, end: u64) {
    let mut walk = BlockWalk {
        tgid,
        _pad: 0,
        cursor: start,
        end,
        region: Region::default(),
    };
    for_each_block(&mut walk, remove_block);
}

/// Runs `step` once per block with `bpf_loop` (5.17+), so the verifier checks the body
/// once instead of once per possible iteration.
#[inline(always)]
fn for_each_block(walk: &mut BlockWalk, step: extern "C" fn(u64, *mut c_void) -> i64) {
    unsafe {
        bpf_loop(
            MAX_BLOCKS as u32,
            step as *mut c_void,
            (walk as *mut BlockWalk).cast(),
            0,
        );
    }
}

/// The key of the block at the walk's cursor, advancing the cursor past it; `None` at
/// the end of the range.
#[inline(always)]
fn next_block(walk: &mut BlockWalk) -> Option<Key<RegionKeyData>> {
    if walk.cursor >= walk.end {
        return None;
    }
    let order = block_order(walk.cursor, walk.end);
    let key = Key::new(
        block_prefix_len(order),
        region_key_data(walk.tgid, walk.cursor),
    );
    walk.cursor += 1u64 << order;
    Some(key)
}

#[inline(never)]
extern "C" fn insert_block(_index: u64, ctx: *mut c_void) -> i64 {
    let walk = unsafe { &mut *ctx.cast::<BlockWalk>() };
    let Some(key) = next_block(walk) else {
        return 1;
    };
    if REGIONS.insert(&key, &walk.region, 0).is_err() {
        bump(REGION_TABLE_FULL);
    }
    0
}

#[inline(never)]
extern "C" fn remove_block(_index: u64, ctx: *mut c_void) -> i64 {
    let walk = unsafe { &mut *ctx.cast::<BlockWalk>() };
    let Some(key) = next_block(walk) else {
        return 1;
    };
    // Missing is fine: the agent may have removed it at process exit.
    let _ = REGIONS.remove(&key);
    0
}

/// State of an unmap walk, shared with its `bpf_loop` callback.
#[repr(C)]
struct UnmapWalk {
    tgid: u32,
    /// Non-zero once a gap was skipped: a region may start inside a skipped block.
    skipped_gap: u32,
    start: u64,
    end: u64,
    cursor: u64,
}

/// Takes `[start, end)` out of the table for `tgid`: whole regions are removed, regions
/// that straddle a boundary are trimmed (the pieces keep their id), and each change is
/// reported as a `region_unmapped` record.
///
/// The walk looks regions up at its cursor and jumps over gaps block by block, so a
/// region that starts inside a skipped gap block is invisible to it. When any gap was
/// skipped (or steps ran out) the range goes to the agent, which finishes the job from
/// its own copy of the table.
#[inline(always)]
pub fn unmap_range(tgid: u32, start: u64, end: u64) {
    let mut walk = UnmapWalk {
        tgid,
        skipped_gap: 0,
        start,
        end,
        cursor: start,
    };
    unsafe {
        bpf_loop(
            UNMAP_WALK_STEPS,
            unmap_step as *mut c_void,
            (&raw mut walk).cast(),
            0,
        );
    }
    if walk.skipped_gap != 0 || walk.cursor < end {
        bump(UNMAP_HANDED_TO_AGENT);
        records::unmap_unresolved(start, end);
    }
}

#[inline(never)]
extern "C" fn unmap_step(_index: u64, ctx: *mut c_void) -> i64 {
    let walk = unsafe { &mut *ctx.cast::<UnmapWalk>() };
    if walk.cursor >= walk.end {
        return 1;
    }
    match lookup(walk.tgid, walk.cursor) {
        Some(found) => {
            let region = *found;
            remove_region(walk.tgid, &region, walk.start, walk.end);
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
fn remove_region(tgid: u32, region: &Region, start: u64, end: u64) {
    remove_blocks(tgid, region.start, region.end);
    if region.start < start {
        insert(
            tgid,
            &Region {
                end: start,
                ..*region
            },
        );
    }
    if region.end > end {
        let tail = Region {
            start: end,
            file_offset: region.file_offset + (end - region.start),
            ..*region
        };
        insert(tgid, &tail);
    }
    let cut_start = if region.start > start {
        region.start
    } else {
        start
    };
    let cut_end = if region.end < end { region.end } else { end };
    records::region_unmapped(region, cut_start, cut_end);
}
