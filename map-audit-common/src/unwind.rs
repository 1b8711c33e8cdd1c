//! Unwind tables: what the kernel needs to walk a user stack that has no frame
//! pointers, built by the agent from each executable file's `.eh_frame` (DWARF CFI).
//!
//! For every address range of a file's code a row says how to find the caller's frame:
//! the canonical frame address (CFA) is RSP or RBP plus an offset, the return address
//! is at CFA - 8 (x86-64), and RBP is either unchanged or saved at CFA + an offset.
//! Rows of one file are sorted by file offset in `UNWIND_ROWS`; `FILE_TABLES` says
//! where each file's rows are, by the (device, inode) every region carries.

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

/// One row, 8 bytes (the kernel rounds array values up to 8): from `pc`, a file
/// offset, up to the next row's `pc`. Offsets are kept in 8-byte words: x86-64 frames
/// move RSP by pushes and 16-byte-aligned adjustments, so every CFA and saved-RBP
/// offset is a multiple of 8 (`UnwindRow::new` refuses anything else, which becomes a
/// stop row).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindRow {
    pub pc: u32,
    /// Added to RSP or RBP (see `kind`), in words, to get the CFA (±256 KiB).
    pub cfa_words: i16,
    /// Where RBP is saved relative to the CFA, in words; 0: RBP is unchanged
    /// (callee-saved and not touched). For `ROW_CFA_PLT`, the low-4-bit threshold.
    pub rbp_words: i8,
    pub kind: u8,
}
const _: () = assert!(core::mem::size_of::<UnwindRow>() == 8);

impl UnwindRow {
    /// A row with its offsets in bytes; `None` when they are not whole words or out
    /// of range.
    pub fn new(pc: u32, kind: u8, cfa_bytes: i64, rbp_bytes: i64) -> Option<Self> {
        if cfa_bytes % 8 != 0 || rbp_bytes % 8 != 0 {
            return None;
        }
        Some(Self {
            pc,
            cfa_words: i16::try_from(cfa_bytes / 8).ok()?,
            rbp_words: i8::try_from(rbp_bytes / 8).ok()?,
            kind,
        })
    }

    /// A row without offsets (`ROW_END`, `ROW_NONE`, `ROW_SIGNAL`).
    pub const fn bare(pc: u32, kind: u8) -> Self {
        Self {
            pc,
            cfa_words: 0,
            rbp_words: 0,
            kind,
        }
    }

    /// A PLT row: CFA = RSP + `cfa_bytes`, plus 8 from the low-4-bit `threshold` on.
    pub fn plt(pc: u32, cfa_bytes: i64, threshold: u8) -> Option<Self> {
        let mut row = Self::new(pc, ROW_CFA_PLT, cfa_bytes, 0)?;
        row.rbp_words = i8::try_from(threshold).ok()?;
        Some(row)
    }

    #[inline(always)]
    pub fn cfa_bytes(&self) -> i64 {
        self.cfa_words as i64 * 8
    }

    #[inline(always)]
    pub fn rbp_bytes(&self) -> i64 {
        self.rbp_words as i64 * 8
    }

    /// For `ROW_CFA_PLT`: the low 4 bits of the address from which the entry's `push`
    /// has run.
    #[inline(always)]
    pub fn plt_threshold(&self) -> u64 {
        self.rbp_words as u64
    }
}

/// Where one file's rows are in `UNWIND_ROWS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindTable {
    pub first_row: u32,
    pub rows: u32,
}
const _: () = assert!(core::mem::size_of::<UnwindTable>() == 8);

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
}
