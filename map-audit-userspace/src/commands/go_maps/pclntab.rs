//! The Go function table from `.gopclntab`, which even stripped Go binaries keep (the
//! runtime needs it for tracebacks): each function's name and address range, and the
//! source file and line of an address (its pcfile and pcln tables). Go mode finds its
//! hooks and names stack frames with it. Formats: Go 1.16-1.17 (magic 0xfffffffa) and
//! 1.18+ (0xfffffff0, 0xfffffff1); every read is bounds-checked.

use anyhow::{Result, bail};

/// One function of the binary, `[entry, end)` in link-time virtual addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunction {
    pub name: String,
    pub entry: u64,
    pub end: u64,
    /// Where its `_func` record starts in the table.
    record: usize,
}

/// Functions sorted by entry, and the table for their line numbers.
pub struct FunctionTable {
    functions: Vec<GoFunction>,
    table: Vec<u8>,
    /// Offset of the entry field's end in a `_func` (4 in 1.18+, 8 before).
    entry_size: usize,
    min_lc: u64,
    cutab: usize,
    filetab: usize,
    pctab: usize,
}

impl FunctionTable {
    /// `text`: the address of the `.text` section, where Go 1.26+ tables count their
    /// entries from (they store 0 as `textStart`; 1.18-1.25 store the address).
    pub fn parse(table: &[u8], text: u64) -> Result<Self> {
        let read = Reader(table);
        let magic = read.u32(0)?;
        let go118 = match magic {
            0xffff_fff0 | 0xffff_fff1 => true,
            0xffff_fffa => false,
            _ => bail!("unknown .gopclntab magic {magic:#x} (Go 1.16 or later is needed)"),
        };
        if read.byte(7)? != 8 {
            bail!(".gopclntab is not from a 64-bit binary");
        }
        let nfunc = read.u64(8)? as usize;
        // (textStart, funcnametab, cutab, filetab, pctab, pclntab)
        let (text_start, names, cutab, filetab, pctab, pcln) = if go118 {
            (
                read.u64(24)?,
                read.u64(32)?,
                read.u64(40)?,
                read.u64(48)?,
                read.u64(56)?,
                read.u64(64)?,
            )
        } else {
            (
                0,
                read.u64(24)?,
                read.u64(32)?,
                read.u64(40)?,
                read.u64(48)?,
                read.u64(56)?,
            )
        };
        let text_start = if text_start == 0 { text } else { text_start };
        let [names, cutab, filetab, pctab, pcln] =
            [names, cutab, filetab, pctab, pcln].map(|o| o as usize);
        let entry_size = if go118 { 8 } else { 16 };
        let mut functions = Vec::with_capacity(nfunc.min(1 << 20));
        for i in 0..nfunc {
            let at = pcln + i * entry_size;
            let (entry, func_offset, end) = if go118 {
                let entry = text_start + u64::from(read.u32(at)?);
                let end = text_start + u64::from(read.u32(at + 8)?);
                (entry, read.u32(at + 4)? as usize, end)
            } else {
                (
                    read.u64(at)?,
                    read.u64(at + 8)? as usize,
                    read.u64(at + 16)?,
                )
            };
            let name_field = pcln + func_offset + if go118 { 4 } else { 8 };
            let name_offset = read.u32(name_field)? as i32;
            let name = read.c_string(names.wrapping_add(name_offset as isize as usize))?;
            functions.push(GoFunction {
                name,
                entry,
                end,
                record: pcln + func_offset,
            });
        }
        functions.sort_by_key(|f| f.entry);
        Ok(Self {
            functions,
            table: table.to_vec(),
            entry_size: if go118 { 4 } else { 8 },
            min_lc: u64::from(read.byte(6)?.max(1)),
            cutab,
            filetab,
            pctab,
        })
    }

    /// The source (file, line) of `addr` inside `function`.
    pub fn source_line(&self, function: &GoFunction, addr: u64) -> Option<(String, u32)> {
        let read = Reader(&self.table);
        // After the entry: nameoff, args, deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset.
        let fields = function.record + self.entry_size;
        let pcfile = read.u32(fields + 16).ok()?;
        let pcln = read.u32(fields + 20).ok()?;
        let cu = read.u32(fields + 28).ok()? as usize;
        let file_number = usize::try_from(self.pc_value(pcfile, function.entry, addr)?).ok()?;
        let line = u32::try_from(self.pc_value(pcln, function.entry, addr)?).ok()?;
        let file_offset = read.u32(self.cutab + (cu + file_number) * 4).ok()?;
        if file_offset == u32::MAX {
            return None;
        }
        let file = read.c_string(self.filetab + file_offset as usize).ok()?;
        Some((file, line))
    }

    /// How far RSP is below the function's entry RSP at `addr` (its pcsp table): the
    /// return address is at RSP plus this. `None` when the table has no value there.
    pub fn frame_size(&self, function: &GoFunction, addr: u64) -> Option<u64> {
        // After the entry: nameoff, args, deferreturn, then pcsp.
        let pcsp = Reader(&self.table)
            .u32(function.record + self.entry_size + 12)
            .ok()?;
        u64::try_from(self.pc_value(pcsp, function.entry, addr)?).ok()
    }

    /// The value a pc-value table (deltas as zig-zag varints, pc steps as varints of
    /// instruction quanta) holds at `target`.
    fn pc_value(&self, offset: u32, entry: u64, target: u64) -> Option<i64> {
        if offset == 0 {
            return None;
        }
        let mut at = self.pctab.checked_add(offset as usize)?;
        let (mut value, mut pc) = (-1i64, entry);
        for step in 0.. {
            let delta = varint(&self.table, &mut at)?;
            if delta == 0 && step > 0 {
                return None; // the table ended before `target`
            }
            value += if delta & 1 != 0 {
                !((delta >> 1) as i64)
            } else {
                (delta >> 1) as i64
            };
            pc = pc.checked_add(varint(&self.table, &mut at)? * self.min_lc)?;
            if target < pc {
                return Some(value);
            }
        }
        None
    }

    pub fn by_name(&self, name: &str) -> Option<&GoFunction> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// The function whose code holds `addr`.
    pub fn at(&self, addr: u64) -> Option<&GoFunction> {
        let i = self.functions.partition_point(|f| f.entry <= addr);
        let function = self.functions.get(i.checked_sub(1)?)?;
        (addr < function.end).then_some(function)
    }

    pub fn len(&self) -> usize {
        self.functions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }
}

/// An unsigned LEB128 varint at `*at`, which moves past it.
fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes(&self, at: usize, len: usize) -> Result<&[u8]> {
        match self.0.get(at..at.saturating_add(len)) {
            Some(bytes) => Ok(bytes),
            None => bail!(".gopclntab is cut short (a read at {at:#x})"),
        }
    }
    fn byte(&self, at: usize) -> Result<u8> {
        Ok(self.bytes(at, 1)?[0])
    }
    fn u32(&self, at: usize) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(at, 4)?.try_into()?))
    }
    fn u64(&self, at: usize) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(at, 8)?.try_into()?))
    }
    fn c_string(&self, at: usize) -> Result<String> {
        let rest = self.bytes(at, 0).map(|_| &self.0[at..])?;
        match rest.iter().position(|&b| b == 0) {
            Some(len) => Ok(String::from_utf8_lossy(&rest[..len]).into_owned()),
            None => bail!(".gopclntab has an unterminated function name"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Go 1.18-layout table with two functions.
    fn table() -> Vec<u8> {
        let mut t = vec![0u8; 72];
        t[..4].copy_from_slice(&0xffff_fff1u32.to_le_bytes());
        t[7] = 8;
        t[8..16].copy_from_slice(&2u64.to_le_bytes());
        t[24..32].copy_from_slice(&0x401000u64.to_le_bytes());
        let names = 72;
        let pcln = names + 16;
        t[32..40].copy_from_slice(&(names as u64).to_le_bytes());
        t[64..72].copy_from_slice(&(pcln as u64).to_le_bytes());
        t.extend_from_slice(b"main.a\0main.bb\0\0");
        // functab: (entryoff, funcoff) x2, end; then two _func (entryoff, nameoff).
        for word in [0u32, 24, 0x40, 32, 0x90, 0, 0x0, 0, 0x40, 7] {
            t.extend_from_slice(&word.to_le_bytes());
        }
        t
    }

    #[test]
    fn finds_functions_by_name_and_address() {
        let functions = FunctionTable::parse(&table(), 0).unwrap();
        assert_eq!(functions.len(), 2);
        let b = functions.by_name("main.bb").unwrap();
        assert_eq!((b.entry, b.end), (0x401040, 0x401090));
        assert_eq!(functions.at(0x401041).unwrap().name, "main.bb");
        assert_eq!(functions.at(0x401000).unwrap().name, "main.a");
        assert!(functions.at(0x401090).is_none());
        assert!(functions.at(0x400fff).is_none());
    }

    #[test]
    fn decodes_pc_value_tables() {
        // At offset 1: value -1+5 for 4 bytes of code, then +1 for 4 more, then the end.
        let table = FunctionTable {
            functions: Vec::new(),
            table: vec![0, 10, 4, 2, 4, 0],
            entry_size: 4,
            min_lc: 1,
            cutab: 0,
            filetab: 0,
            pctab: 0,
        };
        assert_eq!(table.pc_value(1, 0x1000, 0x1003), Some(4));
        assert_eq!(table.pc_value(1, 0x1000, 0x1004), Some(5));
        assert_eq!(table.pc_value(1, 0x1000, 0x1008), None);
        assert_eq!(table.pc_value(0, 0x1000, 0x1000), None, "no table");
        assert_eq!(table.pc_value(5, 0x1000, 0x1000), None, "cut short");
        let mut at = 0;
        assert_eq!(varint(&[0xe5, 0x8e, 0x26], &mut at), Some(624_485));
        assert_eq!(at, 3);
    }

    #[test]
    fn refuses_cut_or_foreign_tables() {
        let t = table();
        assert!(FunctionTable::parse(&t[..80], 0).is_err());
        assert!(FunctionTable::parse(b"\x01\x02\x03\x04 not a table", 0).is_err());
    }
}
