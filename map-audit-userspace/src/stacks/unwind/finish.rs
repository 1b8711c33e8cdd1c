//! Finishes a fault's stack walk the kernel stopped at code whose table was not built
//! yet (`KIND_WRITE_FAULT_SNAPSHOT`): the same rules as the kernel's walk
//! (`map-audit-ebpf/src/user_stack.rs`, `caller`), on the rows the agent has built
//! since and the copy of the stack the record carries. Words outside the copy end the
//! stack as unreadable.

use map_audit_common::{
    MAX_STACK_DEPTH,
    config::UNWIND_CFI,
    records::{FAULT_STACK_TRUNCATED, FaultRecord, SnapshotFaultRecord},
    unwind::{
        ROW_CFA_PLT, ROW_CFA_RBP, ROW_CFA_RSP, ROW_END, ROW_SIGNAL, SIGNAL_RBP, SIGNAL_RIP,
        SIGNAL_RSP, STACK_END_ANONYMOUS_CODE, STACK_END_COMPLETE, STACK_END_DEPTH_LIMIT,
        STACK_END_NO_UNWIND_INFO, STACK_END_UNREADABLE, UnwindRow,
    },
};

/// What the agent knows of the code at a pc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Row(UnwindRow),
    /// In a file without a row there (no CFI, or no table), or in no tracked mapping.
    NoRow,
    /// Not in a file (JIT).
    Anonymous,
}

/// A frame's registers: pc, sp, bp, and whether pc is the instruction that ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Regs {
    pc: u64,
    sp: u64,
    bp: u64,
    exact: bool,
}

/// The fault record of `snapshot` with its walk finished: frames appended, `stack_end`
/// and the truncated flag set by where the walk ended. `code_at` answers for the
/// faulting process's code; `mode` is `--unwind`'s.
pub fn finish(
    snapshot: &SnapshotFaultRecord,
    mode: u32,
    code_at: impl FnMut(u64) -> Code,
) -> FaultRecord {
    let mut record = snapshot.fault;
    let depth = usize::try_from(record.stack_bytes.max(0) / 8).unwrap_or(0);
    let copied = &snapshot.stack[..(snapshot.stack_len as usize).min(snapshot.stack.len())];
    let read = |address: u64| -> Option<u64> {
        let offset = usize::try_from(address.checked_sub(snapshot.sp)?).ok()?;
        let bytes = copied.get(offset..offset.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    };
    let start = Regs {
        pc: snapshot.pc,
        sp: snapshot.sp,
        bp: snapshot.bp,
        exact: snapshot.exact != 0,
    };
    let (frames, end) = walk(start, depth.max(1), mode, code_at, read);
    for (i, pc) in frames.iter().enumerate() {
        record.stack[depth.max(1) + i] = *pc;
    }
    record.stack_bytes = ((depth.max(1) + frames.len()) * 8) as i64;
    record.stack_end = end;
    if end == STACK_END_COMPLETE {
        record.flags &= !FAULT_STACK_TRUNCATED;
    } else {
        record.flags |= FAULT_STACK_TRUNCATED;
    }
    record
}

/// The callers of `start`, outermost last, and why the walk ended; `depth` frames are
/// in the record already (`start`'s included).
fn walk(
    start: Regs,
    depth: usize,
    mode: u32,
    mut code_at: impl FnMut(u64) -> Code,
    read: impl Fn(u64) -> Option<u64>,
) -> (Vec<u64>, u32) {
    let mut frames = Vec::new();
    let mut regs = start;
    loop {
        let next = match caller(regs, mode, &mut code_at, &read) {
            Ok(next) => next,
            Err(end) => return (frames, end),
        };
        if next.pc == 0 {
            return (frames, STACK_END_COMPLETE);
        }
        if depth + frames.len() >= MAX_STACK_DEPTH {
            return (frames, STACK_END_DEPTH_LIMIT);
        }
        frames.push(next.pc);
        regs = next;
    }
}

/// The caller of the frame at `regs`, or why there is none (`STACK_END_*`).
fn caller(
    regs: Regs,
    mode: u32,
    code_at: &mut impl FnMut(u64) -> Code,
    read: &impl Fn(u64) -> Option<u64>,
) -> Result<Regs, u32> {
    // A return address points after its call: its row is the call's.
    let lookup = if regs.exact {
        regs.pc
    } else {
        regs.pc.wrapping_sub(1)
    };
    let row = match code_at(lookup) {
        Code::Row(row) => row,
        other if mode == UNWIND_CFI => return Err(end_of(other)),
        other => return frame_pointer_caller(regs, read).map_err(|_| end_of(other)),
    };
    let cfa = match row.kind {
        ROW_CFA_RSP => regs.sp.wrapping_add(row.cfa_bytes() as u64),
        ROW_CFA_RBP => regs.bp.wrapping_add(row.cfa_bytes() as u64),
        ROW_CFA_PLT => {
            let pushed = if regs.pc & 15 >= row.plt_threshold() {
                8
            } else {
                0
            };
            regs.sp.wrapping_add(row.cfa_bytes() as u64 + pushed)
        }
        ROW_SIGNAL => {
            return match (
                read(regs.sp + SIGNAL_RIP),
                read(regs.sp + SIGNAL_RSP),
                read(regs.sp + SIGNAL_RBP),
            ) {
                (Some(pc), Some(sp), Some(bp)) => Ok(Regs {
                    pc,
                    sp,
                    bp,
                    exact: true,
                }),
                _ => Err(STACK_END_UNREADABLE),
            };
        }
        ROW_END => return Err(STACK_END_COMPLETE),
        _ => return Err(STACK_END_NO_UNWIND_INFO),
    };
    // Callers' frames sit at higher addresses; anything else is not a stack.
    if cfa <= regs.sp {
        return Err(STACK_END_UNREADABLE);
    }
    let pc = read(cfa - 8).ok_or(STACK_END_UNREADABLE)?;
    let bp = if row.rbp_words == 0 || row.kind == ROW_CFA_PLT {
        regs.bp
    } else {
        read(cfa.wrapping_add(row.rbp_bytes() as u64)).ok_or(STACK_END_UNREADABLE)?
    };
    Ok(Regs {
        pc,
        sp: cfa,
        bp,
        exact: false,
    })
}

/// The x86-64 frame-pointer convention (`--unwind auto` where there is no row).
fn frame_pointer_caller(regs: Regs, read: &impl Fn(u64) -> Option<u64>) -> Result<Regs, u32> {
    let bp = regs.bp;
    if bp == 0 || bp & 7 != 0 || bp < regs.sp {
        return Err(STACK_END_COMPLETE);
    }
    let (Some(caller_bp), Some(pc)) = (read(bp), read(bp + 8)) else {
        return Err(STACK_END_UNREADABLE);
    };
    Ok(Regs {
        pc,
        sp: bp + 16,
        bp: if caller_bp > bp { caller_bp } else { 0 },
        exact: false,
    })
}

fn end_of(code: Code) -> u32 {
    match code {
        Code::Anonymous => STACK_END_ANONYMOUS_CODE,
        _ => STACK_END_NO_UNWIND_INFO,
    }
}

#[cfg(test)]
mod tests {
    use map_audit_common::{
        config::UNWIND_AUTO,
        records::{FaultRecord, SNAPSHOT_BYTES},
        unwind::ROW_CFA_RBP,
    };

    use super::*;

    const SP: u64 = 0x7ffd_0000_1000;

    /// A snapshot stopped at pc 0x1100 (the fault: one frame so far), with `words`
    /// from SP up.
    fn snapshot(words: &[u64], bp: u64) -> SnapshotFaultRecord {
        // SAFETY: all-zero is a valid record (plain integers).
        let mut s: SnapshotFaultRecord = unsafe { std::mem::zeroed() };
        s.fault = unsafe { std::mem::zeroed::<FaultRecord>() };
        s.fault.stack[0] = 0x1100;
        s.fault.stack_bytes = 8;
        s.fault.stack_end = STACK_END_NO_UNWIND_INFO;
        s.fault.flags = FAULT_STACK_TRUNCATED;
        (s.pc, s.sp, s.bp, s.exact) = (0x1100, SP, bp, 1);
        for (i, w) in words.iter().enumerate() {
            s.stack[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        s.stack_len = (words.len() * 8).min(SNAPSHOT_BYTES) as u32;
        s
    }

    fn row(kind: u8, cfa: i64, rbp: i64) -> Code {
        Code::Row(UnwindRow::new(0, kind, cfa, rbp).unwrap())
    }

    /// leaf (0x1100, CFA = SP+16) < middle (0x2200, CFA = RSP+8) < _start (0x3300, end).
    fn code(pc: u64) -> Code {
        match pc {
            0x1100 => row(ROW_CFA_RSP, 16, 0),
            0x2200..0x2300 => row(ROW_CFA_RSP, 8, 0),
            0x3300..0x3400 => Code::Row(UnwindRow::bare(0, ROW_END)),
            _ => Code::NoRow,
        }
    }

    #[test]
    fn a_stack_from_rows_is_finished_to_its_end_and_no_longer_truncated() {
        // [SP] local, [SP+8] return into middle; middle's return at SP+16.
        let s = snapshot(&[7, 0x2210, 0x3310], 0);
        let done = finish(&s, UNWIND_AUTO, code);
        assert_eq!(done.stack_end, STACK_END_COMPLETE);
        assert_eq!(done.flags & FAULT_STACK_TRUNCATED, 0);
        assert_eq!(&done.stack[..3], &[0x1100, 0x2210, 0x3310]);
        assert_eq!(done.stack_bytes, 24);
    }

    #[test]
    fn a_return_address_outside_the_copy_ends_the_stack_as_unreadable() {
        let s = snapshot(&[7], 0);
        let done = finish(&s, UNWIND_AUTO, code);
        assert_eq!(done.stack_end, STACK_END_UNREADABLE);
        assert_ne!(done.flags & FAULT_STACK_TRUNCATED, 0);
        assert_eq!(done.stack_bytes, 8);
    }

    #[test]
    fn code_without_rows_is_walked_by_frame_pointers_in_auto_mode_only() {
        // The fault's frame has no row; its RBP points at [saved rbp 0, return 0x3310].
        let no_row = |pc: u64| if pc == 0x1100 { Code::NoRow } else { code(pc) };
        let s = snapshot(&[0, 0x3310], SP);
        let done = finish(&s, UNWIND_AUTO, no_row);
        assert_eq!(&done.stack[..2], &[0x1100, 0x3310]);
        assert_eq!(done.stack_end, STACK_END_COMPLETE);
        let done = finish(&s, UNWIND_CFI, no_row);
        assert_eq!(done.stack_end, STACK_END_NO_UNWIND_INFO);
        assert_eq!(done.stack_bytes, 8);
    }

    #[test]
    fn an_rbp_frame_restores_the_saved_rbp() {
        // CFA = RBP + 16, RBP saved at CFA - 16: the classic prologue.
        let rbp_frame = |pc: u64| {
            if pc == 0x1100 {
                row(ROW_CFA_RBP, 16, -16)
            } else {
                code(pc)
            }
        };
        let s = snapshot(&[0xdead, 0x2210, 0x3310], SP);
        let done = finish(&s, UNWIND_AUTO, rbp_frame);
        assert_eq!(&done.stack[..3], &[0x1100, 0x2210, 0x3310]);
        assert_eq!(done.stack_end, STACK_END_COMPLETE);
    }

    #[test]
    fn code_in_no_file_ends_the_stack_as_anonymous() {
        let s = snapshot(&[7, 0x9990], 0);
        let jit = |pc: u64| {
            if pc == 0x998f {
                Code::Anonymous
            } else {
                code(pc)
            }
        };
        let done = finish(&s, UNWIND_CFI, |pc| {
            if pc == 0x1100 {
                row(ROW_CFA_RSP, 16, 0)
            } else {
                jit(pc)
            }
        });
        assert_eq!(done.stack_end, STACK_END_ANONYMOUS_CODE);
        assert_eq!(&done.stack[..2], &[0x1100, 0x9990]);
    }
}
