//! The Go function table from `.gopclntab`, which even stripped Go binaries keep (the
//! runtime needs it for tracebacks): each function's name and address range. Go mode
//! finds its hooks and names stack frames with it. Formats: Go 1.16-1.17 (magic
//! 0xfffffffa) and 1.18+ (0xfffffff0, 0xfffffff1); every read is bounds-checked.

use anyhow::{Result, bail};

/// One function of the binary, `[entry, end)` in link-time virtual addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFunction {
    pub name: String,
    pub entry: u64,
    pub end: u64,
}

/// Functions sorted by entry.
pub struct FunctionTable {
    functions: Vec<GoFunction>,
}

impl FunctionTable {
    pub fn parse(table: &[u8]) -> Result<Self> {
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
        let (text_start, names, pcln) = if go118 {
            (
                read.u64(24)?,
                read.u64(32)? as usize,
                read.u64(64)? as usize,
            )
        } else {
            (0, read.u64(24)? as usize, read.u64(56)? as usize)
        };
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
            functions.push(GoFunction { name, entry, end });
        }
        functions.sort_by_key(|f| f.entry);
        Ok(Self { functions })
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
        let functions = FunctionTable::parse(&table()).unwrap();
        assert_eq!(functions.len(), 2);
        let b = functions.by_name("main.bb").unwrap();
        assert_eq!((b.entry, b.end), (0x401040, 0x401090));
        assert_eq!(functions.at(0x401041).unwrap().name, "main.bb");
        assert_eq!(functions.at(0x401000).unwrap().name, "main.a");
        assert!(functions.at(0x401090).is_none());
        assert!(functions.at(0x400fff).is_none());
    }

    #[test]
    fn refuses_cut_or_foreign_tables() {
        let t = table();
        assert!(FunctionTable::parse(&t[..80]).is_err());
        assert!(FunctionTable::parse(b"\x01\x02\x03\x04 not a table").is_err());
    }
}
