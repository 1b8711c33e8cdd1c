//! What exec maps without a system call: the program's segments (its `.data` and
//! `.bss` among them), the interpreter's, and the stack. Read at `sched_process_exec`,
//! before the program's first instruction, by looking up VMAs (`bpf_find_vma`, 5.17+)
//! from a few anchors the kernel keeps in the new `mm` (`AT_PHDR` and `AT_BASE` from
//! the saved auxiliary vector, the code and data bounds, the stack start) and following
//! each anchor's run of adjacent VMAs. The object for older kernels (no `bpf_find_vma`)
//! follows their VMA list (`mm->mmap`, `vm_next`) from the lowest up to the stack
//! instead: a new program has no other VMAs below it (vvar and the vDSO lie above).
//!
//! The stack is tracked over the range it may grow into (`RLIMIT_STACK`, at most
//! 128 MiB: the kernel keeps at least that gap below the stack free of mmaps), so a
//! deeper write needs no table change on the fault path.

use core::ffi::c_void;

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel, generated};
use map_audit_common::{
    PAGE_SIZE,
    counters::EXEC_MAPPINGS_UNREAD,
    records::ORIGIN_EXEC,
    region::{MAP_ANONYMOUS, MAP_GROWSDOWN, MAP_PRIVATE, MAP_SHARED, MAP_STACK, PROT_EXEC, Region},
};

use crate::{
    counters::bump,
    id_sequence, loops, mapped_file,
    maps::{EXEC_WALK, kernel_offsets},
    records, region_filter, region_table,
};

/// Mappings recorded per exec (a dynamically linked program has about 14).
const MAX_MAPPINGS: usize = 32;
/// Anchors: `AT_PHDR`, start_code, start_data, end_data - 1, `AT_BASE`, start_stack.
const ANCHORS: usize = 6;
/// Steps of the walk: VMAs found plus pages probed in gaps.
const WALK_STEPS: u32 = 160;
/// Pages probed past the end of an anchor's run before going to the next anchor.
const MAX_GAP_PAGES: u32 = 16;
/// Auxiliary vector words read (`AT_PHDR` and `AT_BASE` come early).
const AUXV_WORDS: usize = 32;
const AT_PHDR: u64 = 3;
const AT_BASE: u64 = 7;
const RLIMIT_STACK: u64 = 3;
const MAX_STACK_RESERVE: u64 = 128 << 20;

const VM_PROT_MASK: u64 = 0x7;
const VM_SHARED: u64 = 0x8;
const VM_GROWSDOWN: u64 = 0x100;

/// One VMA as the walk saw it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Vma {
    start: u64,
    end: u64,
    flags: u64,
    pgoff: u64,
    file: u64,
}

/// The walk's state, per CPU (too large for the stack, which 6.1 limits to 512 bytes
/// with the callbacks'); only `sched_process_exec` uses it, and it cannot nest.
#[repr(C)]
pub struct ExecWalk {
    tgid: u32,
    generation: u32,
    anchor: u32,
    gap_pages: u32,
    count: u32,
    found: u32,
    cursor: u64,
    done_until: u64,
    stack_reserve: u64,
    anchors: [u64; ANCHORS],
    auxv: [u64; AUXV_WORDS],
    vma: Vma,
    vmas: [Vma; MAX_MAPPINGS],
}

/// How the exec-time VMAs are found.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// `bpf_find_vma` from the anchors; in the object for older kernels, the VMA list.
    Default,
    /// `bpf_find_vma` from the anchors in the object for older kernels too.
    #[cfg(feature = "kernel-5-10")]
    FindVma,
}

/// Records the mappings of the program that the current task has just exec'd.
#[inline(always)]
pub fn track(tgid: u32, generation: u32, how: Walk) {
    // A raw pointer, no `&mut` across the `bpf_loop` calls: their callbacks change the
    // same per-CPU value, which the compiler must not assume unchanged.
    let Some(walk) = EXEC_WALK.get_ptr_mut(0) else {
        return;
    };
    let read = unsafe {
        (*walk).tgid = tgid;
        (*walk).generation = generation;
        (*walk).anchor = 0;
        (*walk).gap_pages = 0;
        (*walk).count = 0;
        (*walk).cursor = 0;
        (*walk).done_until = 0;
        read_anchors(walk)
    };
    if read.is_err() {
        bump(EXEC_MAPPINGS_UNREAD);
        return;
    }
    match how {
        #[cfg(feature = "kernel-5-10")]
        Walk::Default => {
            unsafe { (*walk).cursor = first_vma() };
            let steps = MAX_MAPPINGS as u32;
            loops::repeat(steps, steps, list_step);
        }
        _ => loops::repeat(WALK_STEPS, WALK_STEPS, walk_step),
    }
    let count = unsafe { core::ptr::read_volatile(&raw const (*walk).count) };
    if count == 0 {
        bump(EXEC_MAPPINGS_UNREAD);
        return;
    }
    loops::repeat(MAX_MAPPINGS as u32, count, record_step);
}

/// # Safety
/// `walk` points to this CPU's `EXEC_WALK` value.
#[inline(always)]
unsafe fn read_anchors(walk: *mut ExecWalk) -> Result<(), i32> {
    let walk = unsafe { &mut *walk };
    let off = kernel_offsets();
    let read = |address: u64| unsafe { bpf_probe_read_kernel(address as *const u64) };
    let task = unsafe { bpf_get_current_task() };
    let mm = read(task + u64::from(off.task_mm))?;
    let start_data = read(mm + u64::from(off.mm_start_data))?;
    let end_data = read(mm + u64::from(off.mm_end_data))?;
    // Straight into the per-CPU walk: the words would not fit on the stack.
    let copied = unsafe {
        generated::bpf_probe_read_kernel(
            walk.auxv.as_mut_ptr().cast(),
            (AUXV_WORDS * 8) as u32,
            (mm + u64::from(off.mm_saved_auxv)) as *const c_void,
        )
    };
    if copied != 0 {
        return Err(copied as i32);
    }
    let (mut phdr, mut base) = (0, 0);
    for pair in 0..AUXV_WORDS / 2 {
        let value = walk.auxv[2 * pair + 1];
        match walk.auxv[2 * pair] {
            AT_PHDR => phdr = value,
            AT_BASE => base = value,
            _ => {}
        }
    }
    walk.anchors = [
        phdr,
        read(mm + u64::from(off.mm_start_code))?,
        start_data,
        if end_data > start_data {
            end_data - 1
        } else {
            0
        },
        base,
        read(mm + u64::from(off.mm_start_stack))?,
    ];
    let signal = read(task + u64::from(off.task_signal))?;
    let limit = read(signal + u64::from(off.signal_rlim) + 16 * RLIMIT_STACK)?;
    walk.stack_reserve = if limit > MAX_STACK_RESERVE {
        MAX_STACK_RESERVE
    } else {
        limit
    };
    Ok(())
}

/// Masked indices: the 6.1 verifier loses checked bounds on the way to map values.
#[inline(always)]
fn anchor_index(i: u32) -> usize {
    (i as usize) % ANCHORS
}

#[inline(always)]
fn mapping_index(i: u32) -> usize {
    (i as usize) & (MAX_MAPPINGS - 1)
}

loops::step! {
    fn walk_step(_index) -> i64 {
        let Some(walk) = EXEC_WALK.get_ptr_mut(0) else {
            return 1;
        };
        let walk = unsafe { &mut *walk };
        use generated::{bpf_find_vma, bpf_get_current_task_btf};
        if walk.anchor as usize >= ANCHORS || walk.count as usize >= MAX_MAPPINGS {
            return 1;
        }
        if walk.cursor == 0 {
            let anchor = walk.anchors[anchor_index(walk.anchor)];
            if anchor == 0 || anchor < walk.done_until {
                walk.anchor += 1;
                return 0;
            }
            walk.cursor = anchor & !(PAGE_SIZE - 1);
            walk.gap_pages = 0;
        }
        walk.found = 0;
        unsafe {
            bpf_find_vma(
                bpf_get_current_task_btf(),
                walk.cursor,
                vma_found as *mut c_void,
                core::ptr::null_mut(),
                0,
            );
        }
        if walk.found == 0 {
            walk.gap_pages += 1;
            walk.cursor += PAGE_SIZE;
            if walk.gap_pages > MAX_GAP_PAGES {
                walk.anchor += 1;
                walk.cursor = 0;
            }
            return 0;
        }
        let vma = walk.vma;
        if vma.start >= walk.done_until {
            walk.vmas[mapping_index(walk.count)] = vma;
            walk.count += 1;
        }
        if vma.end > walk.done_until {
            walk.done_until = vma.end;
        }
        if vma.flags & VM_GROWSDOWN != 0 {
            // Nothing of the program's lies above its stack.
            walk.anchor = ANCHORS as u32;
        } else {
            walk.cursor = vma.end;
            walk.gap_pages = 0;
        }
        0
    }
}

/// `bpf_find_vma`'s callback: copies the VMA's fields into the walk.
#[inline(never)]
extern "C" fn vma_found(_task: *mut c_void, vma: *mut c_void, _ctx: *mut c_void) -> i64 {
    let Some(walk) = EXEC_WALK.get_ptr_mut(0) else {
        return 0;
    };
    let walk = unsafe { &mut *walk };
    walk.vma = read_vma(vma as u64);
    walk.found = u32::from(walk.vma.end > walk.vma.start);
    0
}

/// The fields of the `vm_area_struct` at `base`.
#[inline(always)]
fn read_vma(base: u64) -> Vma {
    let off = kernel_offsets();
    let read = |offset: u32| unsafe {
        bpf_probe_read_kernel((base + u64::from(offset)) as *const u64).unwrap_or(0)
    };
    Vma {
        start: read(off.vma_vm_start),
        end: read(off.vma_vm_end),
        flags: read(off.vma_vm_flags),
        pgoff: read(off.vma_vm_pgoff),
        file: read(off.vma_vm_file),
    }
}

/// The lowest VMA of the current task (`mm->mmap`), 0 if unreadable.
#[cfg(feature = "kernel-5-10")]
#[inline(always)]
fn first_vma() -> u64 {
    use map_audit_common::config::OFFSET_ABSENT;
    let off = kernel_offsets();
    let read = |address: u64| unsafe { bpf_probe_read_kernel(address as *const u64) }.unwrap_or(0);
    let mm = read(unsafe { bpf_get_current_task() } + u64::from(off.task_mm));
    if mm == 0 || off.mm_mmap == OFFSET_ABSENT {
        return 0;
    }
    read(mm + u64::from(off.mm_mmap))
}

loops::step! {
    /// One VMA of the list walk: recorded, then its `vm_next` (none after the stack).
    #[cfg(feature = "kernel-5-10")]
    fn list_step(_index) -> i64 {
        let Some(walk) = EXEC_WALK.get_ptr_mut(0) else {
            return 1;
        };
        let walk = unsafe { &mut *walk };
        if walk.cursor == 0 || walk.count as usize >= MAX_MAPPINGS {
            return 1;
        }
        let base = walk.cursor;
        let vma = read_vma(base);
        if vma.end <= vma.start {
            return 1;
        }
        walk.vmas[mapping_index(walk.count)] = vma;
        walk.count += 1;
        if vma.flags & VM_GROWSDOWN != 0 {
            return 1;
        }
        let next = u64::from(kernel_offsets().vma_vm_next);
        walk.cursor = unsafe { bpf_probe_read_kernel((base + next) as *const u64) }.unwrap_or(0);
        0
    }
}

loops::step! {
    fn record_step(index) -> i64 {
        let Some(walk) = EXEC_WALK.get_ptr_mut(0) else {
            return 1;
        };
        let walk = unsafe { &*walk };
        if index >= u64::from(walk.count) {
            return 1;
        }
        let vma = walk.vmas[mapping_index(index as u32)];
        let anonymous = vma.file == 0;
        let stack = vma.flags & VM_GROWSDOWN != 0;
        let mut flags = if vma.flags & VM_SHARED != 0 {
            MAP_SHARED
        } else {
            MAP_PRIVATE
        };
        if anonymous {
            flags |= MAP_ANONYMOUS;
        }
        let mut start = vma.start;
        if stack {
            flags |= MAP_GROWSDOWN | MAP_STACK;
            if vma.end - start < walk.stack_reserve {
                start = vma.end - walk.stack_reserve;
            }
        }
        let region = Region {
            start,
            end: vma.end,
            file_offset: if anonymous { 0 } else { vma.pgoff * PAGE_SIZE },
            id: id_sequence::next_id(),
            prot: (vma.flags & VM_PROT_MASK) as u32,
            flags,
            generation: walk.generation,
            path_filter: region_filter::initial_path_state(flags),
            file: mapped_file::key_of(vma.file),
        };
        region_table::insert(walk.tgid, &region);
        if !anonymous && (region.is_writable() || region.prot & PROT_EXEC != 0) {
            mapped_file::send_file_at(vma.file, region.id);
        }
        records::region_mapped(&region, ORIGIN_EXEC);
        0
    }
}
