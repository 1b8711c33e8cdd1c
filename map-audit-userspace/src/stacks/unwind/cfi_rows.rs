//! A file's unwind rows (`map_audit_common::unwind`) from its DWARF CFI: `.eh_frame`,
//! which survives `strip` and which every x86-64 ELF carries for exceptions and
//! backtraces, else `.debug_frame`. Each FDE's CFI program is run with gimli; every
//! row becomes one of the few rule shapes the kernel follows, anything else a stop.
//! Rows are keyed by file offset, which the kernel gets from the region holding a pc
//! (virtual addresses differ from offsets in non-PIE programs and some linkers' output).
//!
//! Cost: about 1 ms per 100 KiB of `.eh_frame` (libc's 230 KiB: ~2.5 ms), once per file.

use anyhow::{Context, Result, bail};
use gimli::{
    BaseAddresses, CfaRule, CieOrFde, DebugFrame, EhFrame, EndianSlice, LittleEndian, RegisterRule,
    UnwindContext, UnwindSection, X86_64,
};
use map_audit_common::unwind::{
    ROW_CFA_PLT, ROW_CFA_RBP, ROW_CFA_RSP, ROW_END, ROW_NONE, ROW_SIGNAL, SIGNAL_RSP, UnwindRow,
};
use object::{Object, ObjectSection, ObjectSegment};

type Reader<'a> = EndianSlice<'a, LittleEndian>;

/// The rows of the ELF file `data`, sorted by address, consecutive duplicates merged.
pub fn rows_of_elf(data: &[u8]) -> Result<Vec<UnwindRow>> {
    let file = object::File::parse(data).context("not an ELF file")?;
    if file.architecture() != object::Architecture::X86_64 {
        bail!("unwind tables are built for x86-64 ELF files only");
    }
    let mut rows = Vec::new();
    if let Some(section) = file.section_by_name(".eh_frame") {
        let eh_frame = EhFrame::new(section.data()?, LittleEndian);
        let mut bases = BaseAddresses::default().set_eh_frame(section.address());
        if let Some(text) = file.section_by_name(".text") {
            bases = bases.set_text(text.address());
        }
        if let Some(got) = file.section_by_name(".got") {
            bases = bases.set_got(got.address());
        }
        collect(&eh_frame, &bases, &mut rows)?;
    } else if let Some(section) = file.section_by_name(".debug_frame") {
        // Compressed in Go binaries (SHF_COMPRESSED) and in packages built with -gz.
        let data = section.uncompressed_data()?;
        let mut debug_frame = DebugFrame::new(&data, LittleEndian);
        debug_frame.set_address_size(8);
        collect(&debug_frame, &BaseAddresses::default(), &mut rows)?;
    } else {
        bail!("the file has no .eh_frame or .debug_frame");
    }
    let segments: Vec<(u64, u64, u64)> = file
        .segments()
        .filter(|s| s.flags_executable())
        .map(|s| {
            let (offset, _) = s.file_range();
            (s.address(), s.address() + s.size(), offset)
        })
        .collect();
    let rows = sorted(to_file_offsets(rows, &segments));
    let entry = to_file_offsets(
        vec![UnwindRow::bare(
            u32::try_from(file.entry()).unwrap_or(u32::MAX),
            ROW_NONE,
        )],
        &segments,
    );
    Ok(match entry.first() {
        Some(entry) => end_at_entry_point(rows, entry.pc),
        None => rows,
    })
}

/// Bytes of entry-point code without CFI that `end_at_entry_point` marks.
const ENTRY_CODE_BYTES: u32 = 64;

/// The entry point is the outermost frame of the thread exec starts: nothing called
/// it. Where no FDE covers it (ld.so's `_start` is bare assembly), its code up to the
/// next FDE (at most `ENTRY_CODE_BYTES`) gets an end row, so the dynamic loader's own
/// stacks end complete instead of at a pc without unwind info.
fn end_at_entry_point(mut rows: Vec<UnwindRow>, entry: u32) -> Vec<UnwindRow> {
    if row_at(&rows, entry).is_some_and(|row| row.kind != ROW_NONE) {
        return rows;
    }
    let limit = entry.saturating_add(ENTRY_CODE_BYTES);
    let next = rows.partition_point(|row| row.pc <= entry);
    let bounded = rows.get(next).is_none_or(|row| row.pc > limit);
    rows.push(UnwindRow::bare(entry, ROW_END));
    if bounded {
        rows.push(UnwindRow::bare(limit, ROW_NONE));
    }
    sorted(rows)
}

/// Rows with their pcs turned from virtual addresses into file offsets through the
/// executable segments (`(vaddr start, vaddr end, file offset)`); rows outside them go.
fn to_file_offsets(rows: Vec<UnwindRow>, segments: &[(u64, u64, u64)]) -> Vec<UnwindRow> {
    rows.into_iter()
        .filter_map(|row| {
            let pc = u64::from(row.pc);
            let &(start, _, offset) = segments
                .iter()
                .find(|&&(start, end, _)| start <= pc && pc <= end)?;
            let pc = u32::try_from(pc - start + offset).ok()?;
            Some(UnwindRow { pc, ..row })
        })
        .collect()
}

trait ExecutableSegment {
    fn flags_executable(&self) -> bool;
}

impl<'data, 'file> ExecutableSegment for object::Segment<'data, 'file> {
    fn flags_executable(&self) -> bool {
        match self.flags() {
            object::SegmentFlags::Elf { p_flags } => p_flags & object::elf::PF_X != 0,
            _ => false,
        }
    }
}

/// Runs every FDE's CFI program of `section` into `rows` (unsorted). An FDE that
/// cannot be parsed is skipped: its addresses stay without rows, where the walk stops.
fn collect<'a, S: UnwindSection<Reader<'a>>>(
    section: &S,
    bases: &BaseAddresses,
    rows: &mut Vec<UnwindRow>,
) -> Result<()> {
    let mut context = Box::new(UnwindContext::new());
    let mut entries = section.entries(bases);
    while let Some(entry) = entries.next().context("reading CFI entries failed")? {
        let CieOrFde::Fde(partial) = entry else {
            continue;
        };
        let Ok(fde) =
            partial.parse(|section, bases, offset| section.cie_from_offset(bases, offset))
        else {
            continue;
        };
        let Ok(mut table) = fde.rows(section, bases, &mut context) else {
            continue;
        };
        while let Ok(Some(row)) = table.next_row() {
            let Ok(pc) = u32::try_from(row.start_address()) else {
                continue; // beyond 4 GiB: not a shape this table holds
            };
            rows.push(convert(section, row, pc));
        }
        if let Ok(end) = u32::try_from(fde.end_address()) {
            rows.push(UnwindRow::bare(end, ROW_NONE));
        }
    }
    Ok(())
}

fn convert<'a, S: UnwindSection<Reader<'a>>>(
    section: &S,
    row: &gimli::UnwindTableRow<usize>,
    pc: u32,
) -> UnwindRow {
    let stop = UnwindRow::bare(pc, ROW_NONE);
    if matches!(row.register(X86_64::RA), Some(RegisterRule::Undefined)) {
        return UnwindRow::bare(pc, ROW_END);
    }
    let (kind, cfa_offset, plt_threshold) = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => match *register {
            X86_64::RSP => (ROW_CFA_RSP, *offset, 0),
            X86_64::RBP => (ROW_CFA_RBP, *offset, 0),
            _ => return stop,
        },
        CfaRule::Expression(expression) => {
            let Ok(expression) = expression.get(section) else {
                return stop;
            };
            match expression_shape(expression.0.slice()) {
                // The saved registers' places are fixed (`SIGNAL_*`).
                Some((ROW_SIGNAL, ..)) => return UnwindRow::bare(pc, ROW_SIGNAL),
                Some((kind, offset, threshold)) => (kind, i64::from(offset), threshold),
                None => return stop,
            }
        }
    };
    if kind == ROW_CFA_PLT {
        return UnwindRow::plt(pc, cfa_offset, plt_threshold as u8).unwrap_or(stop);
    }
    let rbp_offset = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) => 0,
        Some(RegisterRule::Offset(offset)) if offset != 0 => offset,
        // Restored some other way: a caller that uses RBP could not be unwound.
        Some(_) => return stop,
    };
    // Offsets that are not whole words or beyond the row's range: a stop.
    UnwindRow::new(pc, kind, cfa_offset, rbp_offset).unwrap_or(stop)
}

/// The two CFA expressions x86-64 code carries in practice: the PLT's (CFA = RSP + N,
/// plus 8 when the address's low 4 bits are >= T), and glibc's signal trampoline's
/// (CFA = *(RSP + 160), the saved RSP in the `ucontext`).
fn expression_shape(bytes: &[u8]) -> Option<(u8, i32, i16)> {
    const DW_OP_BREG7: u8 = 0x77; // rsp
    const DW_OP_BREG16: u8 = 0x80; // rip
    const DW_OP_DEREF: u8 = 0x06;
    const DW_OP_LIT0: u8 = 0x30;
    match bytes {
        [
            DW_OP_BREG7,
            offset,
            DW_OP_BREG16,
            0,
            0x3f,
            0x1a,
            lit,
            0x2a,
            0x33,
            0x24,
            0x22,
        ] if *offset < 0x40 && (DW_OP_LIT0..DW_OP_LIT0 + 16).contains(lit) => {
            Some((ROW_CFA_PLT, i32::from(*offset), i16::from(lit - DW_OP_LIT0)))
        }
        [DW_OP_BREG7, low, high, DW_OP_DEREF]
            if u64::from(*low & 0x7f) | (u64::from(*high) << 7) == SIGNAL_RSP =>
        {
            Some((ROW_SIGNAL, 0, 0))
        }
        _ => None,
    }
}

/// Sorted by address; at one address a real row wins over the end of the previous
/// FDE; a row whose rule is the previous row's is dropped.
fn sorted(mut rows: Vec<UnwindRow>) -> Vec<UnwindRow> {
    rows.sort_by_key(|row| (row.pc, row.kind == ROW_NONE));
    rows.dedup_by_key(|row| row.pc);
    rows.dedup_by(|next, previous| {
        (next.kind, next.cfa_words, next.rbp_words)
            == (previous.kind, previous.cfa_words, previous.rbp_words)
    });
    rows
}

/// The row covering `pc` (what the kernel's binary search finds).
pub fn row_at(rows: &[UnwindRow], pc: u32) -> Option<&UnwindRow> {
    let index = rows.partition_point(|row| row.pc <= pc);
    index.checked_sub(1).map(|i| &rows[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn libc() -> Vec<UnwindRow> {
        let data = std::fs::read("/usr/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        rows_of_elf(&data).unwrap()
    }

    #[test]
    fn libc_has_rows_for_its_functions_and_its_signal_trampoline() {
        let rows = libc();
        assert!(rows.len() > 10_000, "{} rows", rows.len());
        assert!(rows.windows(2).all(|w| w[0].pc < w[1].pc));
        assert!(
            rows.iter()
                .any(|r| r.kind == ROW_CFA_RSP && r.cfa_bytes() == 8)
        );
        assert!(
            rows.iter()
                .any(|r| r.kind == ROW_CFA_RBP && r.cfa_bytes() == 16)
        );
        assert!(rows.iter().any(|r| r.kind == ROW_SIGNAL), "__restore_rt");
        assert!(rows.iter().any(|r| r.kind == ROW_CFA_PLT), "the PLT");
        assert!(
            rows.iter().any(|r| r.kind == ROW_END),
            "thread start / _start"
        );
    }

    #[test]
    fn the_dynamic_loaders_bare_entry_point_ends_its_stacks() {
        let path = "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2";
        let data = std::fs::read(path).unwrap();
        let file = object::File::parse(&*data).unwrap();
        let entry = u32::try_from(file.entry()).unwrap();
        // ld.so is linked at 0 with text at its file offset: `_start` calls
        // `_dl_start` from its first bytes.
        let rows = rows_of_elf(&data).unwrap();
        assert_eq!(row_at(&rows, entry + 7).unwrap().kind, ROW_END);
        let row = UnwindRow::bare;
        // Covered by an FDE: unchanged; bare: an end row, bounded.
        let covered = vec![row(0x10, ROW_CFA_RSP), row(0x40, ROW_NONE)];
        assert_eq!(end_at_entry_point(covered.clone(), 0x20), covered);
        assert_eq!(
            end_at_entry_point(covered.clone(), 0x40),
            [
                row(0x10, ROW_CFA_RSP),
                row(0x40, ROW_END),
                row(0x80, ROW_NONE)
            ]
        );
    }

    #[test]
    fn plt_and_signal_expressions_are_recognised() {
        let plt = [0x77, 8, 0x80, 0, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22];
        assert_eq!(expression_shape(&plt), Some((ROW_CFA_PLT, 8, 11)));
        let signal = [0x77, 0xa0, 0x01, 0x06];
        assert_eq!(expression_shape(&signal), Some((ROW_SIGNAL, 0, 0)));
        assert_eq!(expression_shape(&[0x77, 8]), None);
    }

    #[test]
    fn rows_are_keyed_by_file_offset() {
        let row = |pc| UnwindRow::bare(pc, ROW_CFA_RSP);
        // A non-PIE program: text at 0x401000, file offset 0x1000.
        let rows = to_file_offsets(
            vec![row(0x401010), row(0x500000)],
            &[(0x401000, 0x402000, 0x1000)],
        );
        assert_eq!(rows, [row(0x1010)]);
    }

    #[test]
    fn sorting_prefers_real_rows_and_merges_repeats() {
        let row = |pc, kind, cfa_offset| UnwindRow::new(pc, kind, cfa_offset, 0).unwrap();
        let rows = sorted(vec![
            row(0x20, ROW_NONE, 0),
            row(0x10, ROW_CFA_RSP, 8),
            row(0x14, ROW_CFA_RSP, 8),
            row(0x20, ROW_CFA_RSP, 16),
        ]);
        assert_eq!(
            rows,
            [row(0x10, ROW_CFA_RSP, 8), row(0x20, ROW_CFA_RSP, 16)]
        );
        assert_eq!(row_at(&rows, 0x1f).unwrap().cfa_bytes(), 8);
        assert!(row_at(&rows, 0x0f).is_none());
    }
}
