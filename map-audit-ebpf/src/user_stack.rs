//! The user stack of a fault, walked here: with the DWARF CFI rows the agent built for
//! each executable file (`map_audit_common::unwind`), where the code has them, and along
//! the frame pointers where it does not (`--unwind auto`, the default; `cfi` stops
//! there, `frame-pointer` never uses the tables). A fault's walk that reaches a file
//! whose table is not built yet stops there, and the agent finishes it from a copy of
//! the stack (`stack_snapshot`).
//!
//! One `bpf_loop` step per frame: the verifier checks the step once. Each step finds
//! the row for the frame's pc (a per-CPU cache of recent pcs first, else the region
//! table for the file and offset, the file's table, and a binary search of its rows),
//! then reads the return address (and a saved RBP) through a window of the stack copied
//! 1 KiB at a time.
//!
//! A fault that repeats one this CPU walked (same pc, sp and bp, same stack words where
//! the walk read) is counted without a walk (`stack_memo`); each walk of a fault is
//! memoised for that.
//!
//! Why not `bpf_get_stack`: it follows frame pointers only (one frame in code built
//! without them), and it reads address 0 at the end of every walk (a nested kernel
//! fault per audited fault).

use core::{ffi::c_void, mem::offset_of};

use crate::{
    go_writers::GO_WRITER_SCRATCH,
    loops,
    maps::{
        FAULT_SCRATCH, FILE_TABLES, FRAME_WALK, STACK_WINDOW, SYNC_SCRATCH, UNWIND_CACHE,
        UNWIND_ROWS, WATCH_SCRATCH, WINDOW_WORDS, agent_config,
    },
    region_cache, region_table,
    stack_memo::{self, WalkReads},
};
use aya_ebpf::{
    bindings::pt_regs,
    helpers::generated::{
        bpf_probe_read_kernel as bpf_probe_read_kernel_raw,
        bpf_probe_read_user as bpf_probe_read_user_raw,
    },
};
use map_audit_common::{
    MAX_STACK_DEPTH, MAX_STACK_DEPTH_5_10, PAGE_SIZE,
    config::{UNWIND_CFI, UNWIND_FRAME_POINTER},
    region::{TABLE_VERSION_AGENT, TABLE_VERSION_KERNEL},
    tally::{STACK_HASH_SEED, stack_hash_step},
    unwind::{
        ROW_CFA_PLT, ROW_CFA_RBP, ROW_CFA_RSP, ROW_END, ROW_NONE, ROW_SEARCH_STEPS, ROW_SIGNAL,
        SIGNAL_RBP, SIGNAL_RIP, SIGNAL_RSP, STACK_END_ANONYMOUS_CODE, STACK_END_COMPLETE,
        STACK_END_DEPTH_LIMIT, STACK_END_NO_UNWIND_INFO, STACK_END_UNREADABLE, UnwindRow,
    },
};

/// Where the walk starts: the fault's user registers.
#[derive(Clone, Copy)]
pub enum UserRegs {
    /// The `struct pt_regs *` a fault tracepoint passes, read only once the fault is
    /// known to be audited (three kernel reads saved on every other fault).
    At(*const pt_regs),
    /// Registers at hand. `exact`: `ip` is the instruction that ran (a fault), not a
    /// return address (a probe at a function's entry, whose caller is `ip`).
    Known {
        ip: u64,
        sp: u64,
        bp: u64,
        exact: bool,
    },
}

impl UserRegs {
    /// (ip, sp, bp, exact).
    #[inline(always)]
    pub fn read(self) -> Option<(u64, u64, u64, bool)> {
        match self {
            Self::At(regs) => read_regs(regs).map(|(ip, sp, bp)| (ip, sp, bp, true)),
            Self::Known { ip, sp, bp, exact } => Some((ip, sp, bp, exact)),
        }
    }

    /// The registers read now, if they are not at hand yet.
    #[inline(always)]
    pub fn known(self) -> Option<Self> {
        let (ip, sp, bp, exact) = self.read()?;
        Some(Self::Known { ip, sp, bp, exact })
    }
}

/// (ip, sp, bp) from `regs`, in one read from rbp to rsp (one kernel read costs as
/// much as 128 bytes: ~20 ns here) into the start of this CPU's stack window, which
/// every walk refills.
#[inline(always)]
fn read_regs(regs: *const pt_regs) -> Option<(u64, u64, u64)> {
    const FIRST: usize = offset_of!(pt_regs, rbp);
    const BYTES: usize = offset_of!(pt_regs, rsp) + 8 - FIRST;
    let words = STACK_WINDOW.get_ptr_mut(0)?;
    let from = unsafe { regs.cast::<u8>().add(FIRST) };
    if unsafe { bpf_probe_read_kernel_raw(words.cast(), BYTES as u32, from.cast()) } != 0 {
        return None;
    }
    let word = |offset: usize| unsafe { (*words)[(offset - FIRST) / 8] };
    Some((
        word(offset_of!(pt_regs, rip)),
        word(offset_of!(pt_regs, rsp)),
        word(offset_of!(pt_regs, rbp)),
    ))
}

/// Whose unwind tables the walk may use: the process's regions (the fault path), or
/// none (Go mode: frame pointers only).
#[derive(Clone, Copy)]
pub enum Tables {
    Of { tgid: u32, generation: u32 },
    None,
}

/// Frames a walk records at most (the frame buffers hold `MAX_STACK_DEPTH`); fewer on
/// older kernels, whose verifier checks each step of the walk anew.
const WALK_DEPTH: u32 = loops::bound(MAX_STACK_DEPTH as u32, MAX_STACK_DEPTH_5_10 as u32);

/// What a walk found.
pub struct Walked {
    /// Bytes of `frames` filled, like `bpf_get_stack`.
    pub bytes: i64,
    /// Why it stopped (`unwind::STACK_END_*`).
    pub end: u32,
    /// `tally::stack_hash_step` over the frames.
    pub hash: u64,
}

/// Where a walk puts its frames: this CPU's fault record, Go writer, watch record or
/// msync record.
#[derive(Clone, Copy)]
pub enum Frames {
    Fault = 0,
    GoWriter = 1,
    Watch = 2,
    Sync = 3,
}

/// The frame buffer `frames` names (`MAX_STACK_DEPTH` words in a per-CPU map value).
#[inline(always)]
fn frame_buffer(frames: u32) -> Option<*mut u64> {
    if frames == Frames::GoWriter as u32 {
        let writer = GO_WRITER_SCRATCH.get_ptr_mut(0)?;
        Some(unsafe { (*writer).stack.as_mut_ptr() })
    } else if frames == Frames::Watch as u32 {
        let record = WATCH_SCRATCH.get_ptr_mut(0)?;
        Some(unsafe { (*record).stack.as_mut_ptr() })
    } else if frames == Frames::Sync as u32 {
        let record = SYNC_SCRATCH.get_ptr_mut(0)?;
        Some(unsafe { (*record).stack.as_mut_ptr() })
    } else {
        let record = FAULT_SCRATCH.get_ptr_mut(0)?;
        Some(unsafe { (*record).stack.as_mut_ptr() })
    }
}

/// Fills the buffer `frames` names with the ip and the return addresses, innermost
/// first; no frames and `STACK_END_UNREADABLE` when the registers cannot be read. The
/// walk's state is in the per-CPU `FRAME_WALK`, not on the stack: a fault program and
/// its step together must stay within 6.1's 512 bytes.
#[inline(always)]
pub fn walk(regs: UserRegs, frames: Frames, tables: Tables) -> Walked {
    // Never `None` out: LLVM loads the fields of an `Option` it returns before testing
    // it, and 5.10's verifier refuses a read of a stack slot the `None` path never set.
    walk_from(regs, frames, tables).unwrap_or(Walked {
        bytes: 0,
        end: STACK_END_UNREADABLE,
        hash: 0,
    })
}

#[inline(always)]
fn walk_from(regs: UserRegs, frames: Frames, tables: Tables) -> Option<Walked> {
    let (ip, sp, bp, exact) = regs.read()?;
    let buffer = frame_buffer(frames as u32)?;
    unsafe { *buffer = ip };
    let (tgid, generation, mode) = match tables {
        Tables::Of { tgid, generation } => (tgid, generation, agent_config().unwind_mode),
        Tables::None => (0, 0, UNWIND_FRAME_POINTER),
    };
    let state = FRAME_WALK.get_ptr_mut(0)?;
    // Field by field: a whole struct would be built on the stack first.
    unsafe {
        (*state).frames = frames as u32;
        (*state).pc = ip;
        (*state).sp = sp;
        (*state).bp = bp;
        (*state).hash = stack_hash_step(STACK_HASH_SEED, ip);
        (*state).window_base = 0;
        (*state).window_len = 0;
        (*state).kernel_version = region_cache::version(TABLE_VERSION_KERNEL);
        (*state).agent_version = region_cache::version(TABLE_VERSION_AGENT);
        (*state).tgid = tgid;
        (*state).generation = generation;
        (*state).mode = mode;
        (*state).exact = u32::from(exact);
        (*state).depth = 1;
        (*state).end = STACK_END_COMPLETE;
        (*state).reads.start(ip, sp, bp);
    }
    loops::repeat(WALK_DEPTH, WALK_DEPTH, frame_step);
    // Read back through the pointer: the steps changed the map value.
    let (depth, end, hash) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*state).depth),
            core::ptr::read_volatile(&raw const (*state).end),
            core::ptr::read_volatile(&raw const (*state).hash),
        )
    };
    if frames as u32 == Frames::Fault as u32 && tgid != 0 {
        let versions = unsafe { ((*state).kernel_version, (*state).agent_version) };
        stack_memo::keep(
            tgid,
            generation,
            versions,
            unsafe { &(*state).reads },
            hash,
            end,
        );
    }
    Some(Walked {
        bytes: i64::from(depth.min(MAX_STACK_DEPTH as u32)) * 8,
        end,
        hash,
    })
}

/// The walk stopped at a file whose table the agent has not built yet (a fault's walk
/// only; never sent: `write_fault` sends a `stack_snapshot` instead).
pub const STACK_END_TABLE_PENDING: u32 = 0xff;

/// How a stack that ended at `end` is reported when no snapshot goes: a table not
/// built yet is no unwind information, as far as this record knows.
#[inline(always)]
pub fn reported_end(end: u32) -> u32 {
    if end == STACK_END_TABLE_PENDING {
        STACK_END_NO_UNWIND_INFO
    } else {
        end
    }
}

/// The frame this CPU's last walk stopped at: (pc, sp, bp, exact).
#[inline(always)]
pub fn stopped_at() -> Option<(u64, u64, u64, u32)> {
    let walk = FRAME_WALK.get_ptr(0)?;
    Some(unsafe { ((*walk).pc, (*walk).sp, (*walk).bp, (*walk).exact) })
}

/// A walk in progress (this CPU's `FRAME_WALK`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FrameWalk {
    /// `Frames`: the buffer the frames go to.
    frames: u32,
    _pad: u32,
    /// The frame being unwound: its pc and the registers at it.
    pc: u64,
    sp: u64,
    bp: u64,
    hash: u64,
    /// User address of the window's first word; 0 when it holds nothing.
    window_base: u64,
    /// Bytes the window holds from `window_base`.
    window_len: u64,
    /// `TABLE_VERSIONS` at the start: cached rows are valid for these.
    kernel_version: u64,
    agent_version: u64,
    tgid: u32,
    generation: u32,
    mode: u32,
    /// Non-zero: `pc` is the instruction that ran (the innermost frame, or one a signal
    /// interrupted), not a return address.
    exact: u32,
    /// Frames in `frames`.
    depth: u32,
    end: u32,
    /// The caller `caller` found.
    next_pc: u64,
    next_sp: u64,
    next_bp: u64,
    next_exact: u32,
    _pad2: u32,
    /// The word `load_word` read.
    word: u64,
    /// For the memo of fault walks (`stack_memo`).
    reads: WalkReads,
}

/// `caller`'s answer when it found the caller (in `FrameWalk::next_*`); else it
/// answers why there is none (`STACK_END_*`). Results go through the per-CPU walk, not
/// the stack (6.1's 512 bytes), and are plain integers: enums with payloads made LLVM
/// spill registers unset on the variants without them, which the verifier rejects.
const FOUND: u32 = u32::MAX;

/// Records the caller found.
#[inline(always)]
fn found(walk: &mut FrameWalk, pc: u64, sp: u64, bp: u64, exact: bool) -> u32 {
    walk.next_pc = pc;
    walk.next_sp = sp;
    walk.next_bp = bp;
    walk.next_exact = u32::from(exact);
    FOUND
}

loops::step! {
    /// One frame: finds the caller of the frame at (pc, sp, bp) and appends it. The depth
    /// comes from the loop's index, which the verifier does not know, so it checks this
    /// step once (a depth kept as a counter in the context would be a new known constant
    /// each step, and the verifier would check each step anew).
    fn frame_step(index) -> i64 {
        let Some(walk) = FRAME_WALK.get_ptr_mut(0) else {
            return 1;
        };
        let walk = unsafe { &mut *walk };
        let answer = caller(walk);
        if answer != FOUND {
            walk.end = answer;
            return 1;
        }
        let (pc, sp, bp) = (walk.next_pc, walk.next_sp, walk.next_bp);
        if pc == 0 {
            return 1; // the outermost frame returns nowhere: complete
        }
        let depth = index + 1;
        if depth >= u64::from(WALK_DEPTH) {
            walk.end = STACK_END_DEPTH_LIMIT;
            return 1;
        }
        let Some(buffer) = frame_buffer(walk.frames) else {
            return 1;
        };
        // Masked: the verifier checks the store against the buffer's 64 words.
        unsafe { *buffer.add((depth as usize) & (MAX_STACK_DEPTH - 1)) = pc };
        walk.hash = stack_hash_step(walk.hash, pc);
        walk.depth = depth as u32 + 1;
        walk.pc = pc;
        walk.sp = sp;
        walk.bp = bp;
        walk.exact = walk.next_exact;
        0
    }
}

/// The caller of the walk's current frame.
#[inline(always)]
fn caller(walk: &mut FrameWalk) -> u32 {
    if walk.mode == UNWIND_FRAME_POINTER {
        return frame_pointer_caller(walk);
    }
    // A return address points after its call: its row is the call's.
    let lookup = if walk.exact != 0 {
        walk.pc
    } else {
        walk.pc - 1
    };
    let row = row_for(walk, lookup);
    if row.end != STACK_END_COMPLETE {
        // A fault's walk stops where a table is only not built yet, and the agent
        // finishes it (`stack_snapshot`): frame pointers would guess in code built
        // without them.
        if row.end == STACK_END_TABLE_PENDING && walk.frames == Frames::Fault as u32 {
            return STACK_END_TABLE_PENDING;
        }
        let end = reported_end(row.end);
        if walk.mode == UNWIND_CFI {
            return end;
        }
        return match frame_pointer_caller(walk) {
            FOUND => FOUND,
            _ => end,
        };
    }
    let row = row.row;
    let cfa = match row.kind {
        ROW_CFA_RSP => walk.sp.wrapping_add(row.cfa_bytes() as u64),
        ROW_CFA_RBP => walk.bp.wrapping_add(row.cfa_bytes() as u64),
        ROW_CFA_PLT => {
            let pushed = if walk.pc & 15 >= row.plt_threshold() {
                8
            } else {
                0
            };
            walk.sp.wrapping_add(row.cfa_bytes() as u64 + pushed)
        }
        ROW_SIGNAL => return signal_caller(walk),
        ROW_END => return STACK_END_COMPLETE,
        _ => return STACK_END_NO_UNWIND_INFO,
    };
    // Callers' frames sit at higher addresses; anything else is not a stack.
    if cfa <= walk.sp {
        return STACK_END_UNREADABLE;
    }
    let Some(pc) = read_word(walk, cfa - 8) else {
        return STACK_END_UNREADABLE;
    };
    let bp = if row.rbp_words == 0 || row.kind == ROW_CFA_PLT {
        walk.bp
    } else {
        match read_word(walk, cfa.wrapping_add(row.rbp_bytes() as u64)) {
            Some(bp) => bp,
            None => return STACK_END_UNREADABLE,
        }
    };
    found(walk, pc, cfa, bp, false)
}

/// `__restore_rt`: the interrupted frame's registers are in the `ucontext` at RSP.
#[inline(always)]
fn signal_caller(walk: &mut FrameWalk) -> u32 {
    let sp = walk.sp;
    match (
        read_word(walk, sp + SIGNAL_RIP),
        read_word(walk, sp + SIGNAL_RSP),
        read_word(walk, sp + SIGNAL_RBP),
    ) {
        (Some(pc), Some(sp), Some(bp)) => found(walk, pc, sp, bp, true),
        _ => STACK_END_UNREADABLE,
    }
}

/// The x86-64 frame-pointer convention: the caller's RBP at RBP, the return address
/// above it.
#[inline(always)]
fn frame_pointer_caller(walk: &mut FrameWalk) -> u32 {
    let bp = walk.bp;
    if bp == 0 || bp & 7 != 0 || bp < walk.sp {
        return STACK_END_COMPLETE;
    }
    let (Some(caller_bp), Some(pc)) = (read_word(walk, bp), read_word(walk, bp + 8)) else {
        return STACK_END_UNREADABLE;
    };
    // Callers' frames sit at higher addresses; anything else ends the chain.
    let caller_bp = if caller_bp > bp { caller_bp } else { 0 };
    found(walk, pc, bp + 16, caller_bp, false)
}

/// One cached row: valid for the process, pc and table versions it was found for.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CachedRow {
    pc: u64,
    kernel_version: u64,
    agent_version: u64,
    tgid: u32,
    generation: u32,
    row: UnwindRow,
    /// `STACK_END_*` when there is no row.
    end: u32,
}

/// Slots of the per-CPU row cache (direct-mapped by pc).
pub const UNWIND_CACHE_SLOTS: u32 = 512;

/// A row, or (`end` not complete) why there is none. Always fully set (see `FOUND`).
#[derive(Clone, Copy)]
struct Found {
    row: UnwindRow,
    end: u32,
}

impl Found {
    #[inline(always)]
    fn row(row: UnwindRow) -> Self {
        Self {
            row,
            end: STACK_END_COMPLETE,
        }
    }

    #[inline(always)]
    fn none(end: u32) -> Self {
        Self {
            row: UnwindRow::default(),
            end,
        }
    }
}

/// The row covering `pc` in the walk's process, or why there is none.
#[inline(always)]
fn row_for(walk: &mut FrameWalk, pc: u64) -> Found {
    let slot = ((pc ^ (pc >> 9)) as u32) & (UNWIND_CACHE_SLOTS - 1);
    let Some(cached) = UNWIND_CACHE.get_ptr_mut(slot) else {
        return Found::none(STACK_END_NO_UNWIND_INFO);
    };
    let cached = unsafe { &mut *cached };
    if cached.pc == pc
        && cached.tgid == walk.tgid
        && cached.generation == walk.generation
        && cached.kernel_version == walk.kernel_version
        && cached.agent_version == walk.agent_version
    {
        return Found {
            row: cached.row,
            end: cached.end,
        };
    }
    let found = find_row(walk, pc);
    // A missing table is not memoised: the agent adds tables as libraries are mapped
    // without telling the memos (only a removal bumps the version).
    if found.end == STACK_END_NO_UNWIND_INFO || found.end == STACK_END_TABLE_PENDING {
        walk.reads.spoil();
        return found;
    }
    cached.pc = pc;
    cached.tgid = walk.tgid;
    cached.generation = walk.generation;
    cached.kernel_version = walk.kernel_version;
    cached.agent_version = walk.agent_version;
    cached.row = found.row;
    cached.end = found.end;
    found
}

/// The region holding `pc`, its file's table, and the last row at or before the
/// file offset of `pc`.
#[inline(always)]
fn find_row(walk: &FrameWalk, pc: u64) -> Found {
    let Some(region) = region_table::lookup_code(walk.tgid, walk.generation, pc) else {
        return Found::none(STACK_END_NO_UNWIND_INFO);
    };
    if region.file.inode == 0 {
        return Found::none(STACK_END_ANONYMOUS_CODE);
    }
    let file = region.file;
    let offset = pc - region.start + region.file_offset;
    // A file the agent found no CFI in has an entry without rows.
    let Some(table) = (unsafe { FILE_TABLES.get(&file) }) else {
        return Found::none(STACK_END_TABLE_PENDING);
    };
    let (first, rows) = (table.first_row, table.rows);
    if offset > u64::from(u32::MAX) || rows == 0 {
        return Found::none(STACK_END_NO_UNWIND_INFO);
    }
    let offset = offset as u32;
    // The last row whose pc <= offset, in [lo, hi).
    let (mut lo, mut hi) = (first, first + rows);
    for _ in 0..ROW_SEARCH_STEPS {
        if hi - lo <= 1 {
            break;
        }
        let mid = lo + (hi - lo) / 2;
        match UNWIND_ROWS.get(mid) {
            Some(row) if row.pc <= offset => lo = mid,
            Some(_) => hi = mid,
            None => return Found::none(STACK_END_NO_UNWIND_INFO),
        }
    }
    match UNWIND_ROWS.get(lo) {
        Some(row) if row.pc <= offset && row.kind != ROW_NONE => Found::row(*row),
        _ => Found::none(STACK_END_NO_UNWIND_INFO),
    }
}

/// Bytes of stack a walk copies at once (of the window's `WINDOW_WORDS`).
const WALK_COPY_BYTES: u32 = 1024;

/// The user word at `address` (8-aligned or not), through the window: the frames of a
/// call chain sit within a few hundred bytes, so one 1 KiB copy serves several reads.
/// Near the top of a stack the copy can reach an unmapped page and fail (through the
/// fault handler: ~10 µs with a 4 KiB window); the window is then refilled up to the
/// end of the address's page, so a walk pays that at most once, not at every read.
#[inline(always)]
fn read_word(walk: &mut FrameWalk, address: u64) -> Option<u64> {
    if !load_word(walk, address) {
        walk.reads.spoil();
        return None;
    }
    let value = walk.word;
    walk.reads.note(address, value);
    Some(value)
}

/// Puts the user word at `address` in `walk.word` (not in an `Option`: see `FOUND`).
#[inline(always)]
fn load_word(walk: &mut FrameWalk, address: u64) -> bool {
    let Some(words) = STACK_WINDOW.get_ptr_mut(0) else {
        return false;
    };
    let offset = address.wrapping_sub(walk.window_base);
    // `offset` wraps for an address below the window: compared, never added to.
    if walk.window_base == 0
        || walk.window_len < 8
        || offset > walk.window_len - 8
        || offset & 7 != 0
    {
        let mut len = WALK_COPY_BYTES;
        let mut filled =
            unsafe { bpf_probe_read_user_raw(words.cast(), len, address as *const c_void) };
        if filled != 0 {
            let to_page_end = PAGE_SIZE - (address & (PAGE_SIZE - 1));
            if to_page_end < 8 || to_page_end >= u64::from(len) {
                return load_one_word(walk, address);
            }
            len = to_page_end as u32;
            filled =
                unsafe { bpf_probe_read_user_raw(words.cast(), len, address as *const c_void) };
            if filled != 0 {
                return load_one_word(walk, address);
            }
        }
        walk.window_base = address;
        walk.window_len = u64::from(len);
    }
    // Masked: `offset <= window_len - 8` bounds it, which the verifier does not follow.
    let i = ((address.wrapping_sub(walk.window_base) / 8) as usize) & (WINDOW_WORDS - 1);
    walk.word = unsafe { (*words)[i] };
    true
}

/// `load_word` without the window (which could not be filled there).
#[inline(always)]
fn load_one_word(walk: &mut FrameWalk, address: u64) -> bool {
    walk.window_base = 0;
    let word = (&raw mut walk.word).cast::<c_void>();
    unsafe { bpf_probe_read_user_raw(word, 8, address as *const c_void) == 0 }
}
