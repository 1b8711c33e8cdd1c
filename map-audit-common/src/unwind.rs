//! Unwind tables: what the kernel needs to walk a user stack that has no frame
//! pointers, built by the agent from each executable file's `.eh_frame` (DWARF CFI).
//!
//! For every address range of a file's code a row says how to find the caller's frame:
//! the canonical frame address (CFA) is RSP or RBP plus an offset, the return address
//! is at CFA - 8 (x86-64), and RBP is either unchanged or saved at CFA + an offset.
//! Rows of one file are sorted by address in `UNWIND_ROWS`; `UNWIND_TABLES` says where
//! each file's rows are; `UNWIND_MAPPINGS` (keyed like the region table) tells, for an
//! address of a process, which table covers it and the load bias.

/// How a row finds the CFA (`UnwindRow::kind`).
pub const ROW_CFA_RSP: u8 = 1;
/// CFA = RBP + offset (a frame that set up RBP as its frame pointer).
pub const ROW_CFA_RBP: u8 = 2;
/// A PLT entry: CFA = RSP + offset, plus 8 once the entry's `push` ran, which is when
/// the address's low 4 bits are at least `rbp_offset` (the DWARF expression every x86-64
/// linker emits for `.plt`).
pub const ROW_CFA_PLT: u8 = 3;
/// The outermost frame (`_start`, a thread's start): the return address is undefined,
/// the stack is complete.
pub const ROW_END: u8 = 4;
/// No CFI covers the address (a gap between functions, or a rule this unwinder does not
/// follow): the walk stops there.
pub const ROW_NONE: u8 = 5;
/// A signal frame (`__restore_rt`): RSP points to the `ucontext` the kernel saved, which
/// holds the interrupted RSP, RIP and RBP at fixed offsets (`SIGNAL_*`).
pub const ROW_SIGNAL: u8 = 6;

/// x86-64 `rt_sigframe`: offsets from RSP at `__restore_rt` of the saved registers in
/// `uc_mcontext` (as glibc's CFI for `__restore_rt` states them).
pub const SIGNAL_RBP: u64 = 120;
pub const SIGNAL_RSP: u64 = 160;
pub const SIGNAL_RIP: u64 = 168;

/// One row: from `pc` (the file's virtual address, minus the table's base, which is 0
/// for files below 4 GiB) up to the next row's `pc`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    pub pc: u32,
    /// Added to RSP or RBP (see `kind`) to get the CFA.
    pub cfa_offset: i32,
    /// Where RBP is saved, relative to the CFA; 0: RBP is unchanged (callee-saved and
    /// not touched). For `ROW_CFA_PLT`, the low-4-bit threshold.
    pub rbp_offset: i16,
    pub kind: u8,
    pub _pad: u8,
}
const _: () = assert!(core::mem::size_of::<UnwindRow>() == 12);

/// Where one file's rows are in `UNWIND_ROWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindTable {
    pub first_row: u32,
    pub rows: u32,
}
const _: () = assert!(core::mem::size_of::<UnwindTable>() == 8);

/// An executable mapping of a process: its table and load bias (the file's virtual
/// address of a pc is `pc - bias`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindMapping {
    pub table: u32,
    pub _pad: u32,
    pub bias: u64,
}
const _: () = assert!(core::mem::size_of::<UnwindMapping>() == 16);

/// Why a stack walk stopped (`FaultRecord::stack_end`).
pub const STACK_END_COMPLETE: u32 = 0;
/// `MAX_STACK_DEPTH` frames were taken and more remained.
pub const STACK_END_DEPTH_LIMIT: u32 = 1;
/// A frame's code has no unwind table (a file without CFI, or its table not built yet,
/// or not made because the table was full).
pub const STACK_END_NO_UNWIND_INFO: u32 = 2;
/// The stack memory could not be read (paged out, or a corrupt frame).
pub const STACK_END_UNREADABLE: u32 = 3;
/// A frame's code is not in a file (JIT, or code written at run time).
pub const STACK_END_ANONYMOUS_CODE: u32 = 4;

/// Binary search step bound: enough for 2^24 rows in one table.
pub const ROW_SEARCH_STEPS: u32 = 24;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` integers with no padding (sizes asserted above).
    unsafe impl aya::Pod for super::UnwindRow {}
    unsafe impl aya::Pod for super::UnwindTable {}
    unsafe impl aya::Pod for super::UnwindMapping {}
}
