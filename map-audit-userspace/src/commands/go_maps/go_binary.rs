//! Recognises a Go executable and reads what Go mode needs from it: the version and
//! build settings (`.go.buildinfo`), the build id (`.note.go.buildid`), and the bytes
//! behind virtual addresses. Anything that is not an amd64 Go 1.17+ ELF executable is
//! refused with a sentence saying why.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use object::{Object, ObjectSection, ObjectSegment, elf, read::elf::ElfFile64};

/// An opened Go executable.
pub struct GoBinary {
    pub path: PathBuf,
    data: memmap2::Mmap,
    pub info: BuildInfo,
    pub build_id: Option<String>,
    /// Has no `.symtab` (built with `-ldflags=-s`): names come from `.gopclntab` alone.
    pub stripped: bool,
}

/// What `go version -m` shows of the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    /// "go1.19.8".
    pub go_version: String,
    /// (major, minor): (1, 19).
    pub release: (u32, u32),
    /// `GOEXPERIMENT` when the build set one (defaults are not listed).
    pub experiments: Vec<String>,
    /// `GOARCH` from the build settings (Go 1.18+), else from the ELF header.
    pub goarch: String,
}

/// Whether the file at `path` is a Go program (an ELF file with `.go.buildinfo`),
/// reading its headers alone.
pub fn is_go_program(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    // SAFETY: as in `GoBinary::open`.
    let Ok(data) = (unsafe { memmap2::Mmap::map(&file) }) else {
        return false;
    };
    object::File::parse(&*data).is_ok_and(|elf| elf.section_by_name(".go.buildinfo").is_some())
}

impl GoBinary {
    /// Reads `path`; `shown` is how to name it in errors.
    pub fn open(path: &Path, shown: &str) -> Result<Self> {
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {shown}"))?;
        // Mapped, not read: a program that is not Go costs its ELF headers alone
        // (`--all-go` looks at every program on the host), and a Go one the pages of
        // the sections read. SAFETY: read-only; a running executable cannot be written.
        let data =
            unsafe { memmap2::Mmap::map(&file) }.with_context(|| format!("cannot map {shown}"))?;
        let elf = ElfFile64::<object::Endianness>::parse(&*data).map_err(|_| {
            anyhow!("{shown} is not a 64-bit ELF executable, so it is not a Go program go-maps can audit")
        })?;
        if elf.elf_header().e_machine.get(elf.endian()) != elf::EM_X86_64 {
            bail!("{shown} is not an x86-64 program; go-maps reads amd64 registers only");
        }
        let section = elf.section_by_name(".go.buildinfo").ok_or_else(|| {
            anyhow!("{shown} is not a Go program (it has no .go.buildinfo section); go-maps audits Go binaries only")
        })?;
        let bytes = section.data().context("reading .go.buildinfo failed")?;
        let info = parse_build_info(bytes, |addr, len| read_virtual(&elf, addr, len))
            .with_context(|| format!("{shown} has a .go.buildinfo section go-maps cannot read"))?;
        if info.release < (1, 17) {
            bail!(
                "{shown} was built with {}; go-maps needs Go 1.17 or later (the register ABI)",
                info.go_version
            );
        }
        let build_id = elf
            .section_by_name(".note.go.buildid")
            .and_then(|s| s.data().ok())
            .and_then(parse_build_id_note);
        let stripped = elf.section_by_name(".symtab").is_none();
        drop(elf);
        Ok(Self {
            path: path.to_path_buf(),
            data,
            info,
            build_id,
            stripped,
        })
    }

    pub fn elf(&self) -> ElfFile64<'_, object::Endianness> {
        ElfFile64::parse(&*self.data).expect("parsed when opened")
    }

    /// `len` bytes at virtual address `addr` of a loaded segment.
    pub fn read_virtual(&self, addr: u64, len: u64) -> Option<&[u8]> {
        read_virtual(&self.elf(), addr, len)
    }

    /// The file offset of virtual address `addr` (what a uprobe is attached at).
    pub fn file_offset(&self, addr: u64) -> Option<u64> {
        self.elf().segments().find_map(|segment| {
            let (offset, size) = segment.file_range();
            let start = segment.address();
            (addr >= start && addr < start + size).then(|| addr - start + offset)
        })
    }
}

fn read_virtual<'d>(
    elf: &ElfFile64<'d, object::Endianness>,
    addr: u64,
    len: u64,
) -> Option<&'d [u8]> {
    elf.segments()
        .find_map(|segment| segment.data_range(addr, len).ok().flatten())
}

/// The buildinfo blob: a 32-byte header ("\xff Go buildinf:", pointer size, flags),
/// then either the version and module strings inline (flag bit 2, Go 1.18+) or two
/// pointers to Go string headers (Go 1.17).
pub fn parse_build_info<'d>(
    bytes: &'d [u8],
    read_virtual: impl Fn(u64, u64) -> Option<&'d [u8]>,
) -> Result<BuildInfo> {
    const MAGIC: &[u8] = b"\xff Go buildinf:";
    if bytes.len() < 32 || !bytes.starts_with(MAGIC) {
        bail!("the build info has no Go magic");
    }
    let (pointer_size, flags) = (bytes[14] as usize, bytes[15]);
    let (version, modinfo) = if flags & 2 != 0 {
        let (version, rest) = varint_string(&bytes[32..]).context("the version is cut")?;
        let (modinfo, _) = varint_string(rest).unwrap_or((b"", b""));
        (version, modinfo)
    } else {
        if pointer_size != 8 || flags & 1 != 0 {
            bail!("the build info is not little-endian 64-bit");
        }
        let string_at = |field: usize| -> Option<&'d [u8]> {
            let header = u64::from_le_bytes(bytes[16 + 8 * field..24 + 8 * field].try_into().ok()?);
            let header = read_virtual(header, 16)?;
            let ptr = u64::from_le_bytes(header[..8].try_into().ok()?);
            let len = u64::from_le_bytes(header[8..].try_into().ok()?);
            read_virtual(ptr, len)
        };
        let version = string_at(0).context("the version string is unreadable")?;
        (version, string_at(1).unwrap_or(b""))
    };
    let go_version = String::from_utf8_lossy(version).into_owned();
    let release = parse_release(&go_version)
        .ok_or_else(|| anyhow!("`{go_version}` is not a Go release version"))?;
    let setting = |key: &str| -> Option<String> {
        String::from_utf8_lossy(modinfo).lines().find_map(|line| {
            let value = line
                .strip_prefix("build\t")?
                .strip_prefix(key)?
                .strip_prefix('=')?;
            Some(value.to_string())
        })
    };
    Ok(BuildInfo {
        go_version,
        release,
        experiments: setting("GOEXPERIMENT")
            .map(|v| {
                v.split(',')
                    .filter(|e| !e.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default(),
        goarch: setting("GOARCH").unwrap_or_else(|| "amd64".into()),
    })
}

fn varint_string(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let (mut len, mut shift, mut used) = (0usize, 0, 0);
    for &byte in bytes.iter().take(10) {
        used += 1;
        len |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            let rest = bytes.get(used..)?;
            return (len <= rest.len()).then(|| rest.split_at(len));
        }
        shift += 7;
    }
    None
}

/// "go1.19.8" -> (1, 19); "go1.24rc1" and "go1.24.4 X:swissmap" too.
pub fn parse_release(version: &str) -> Option<(u32, u32)> {
    let rest = version.strip_prefix("go")?;
    let mut parts = rest.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The ELF note `Go` type 4 holds the build id string.
fn parse_build_id_note(bytes: &[u8]) -> Option<String> {
    let word =
        |at: usize| Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?) as usize);
    let (name_size, desc_size, kind) = (word(0)?, word(4)?, word(8)?);
    let desc_at = 12 + name_size.next_multiple_of(4);
    if kind != 4 || !b"Go\0\0".starts_with(bytes.get(12..12 + name_size)?) {
        return None;
    }
    let desc = bytes.get(desc_at..desc_at + desc_size)?;
    Some(String::from_utf8_lossy(desc).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_inline_build_info() {
        let mut blob = b"\xff Go buildinf:\x08\x02".to_vec();
        blob.resize(32, 0);
        blob.push(8);
        blob.extend_from_slice(b"go1.24.4");
        let modinfo = b"0123456789abcdefpath\tx\nbuild\tGOARCH=amd64\nbuild\tGOEXPERIMENT=noswissmap,aliastypeparams\n0123456789abcdef";
        blob.push(modinfo.len() as u8);
        blob.extend_from_slice(modinfo);
        let info = parse_build_info(&blob, |_, _| None).unwrap();
        assert_eq!(info.go_version, "go1.24.4");
        assert_eq!(info.release, (1, 24));
        assert_eq!(info.experiments, ["noswissmap", "aliastypeparams"]);
        assert_eq!(info.goarch, "amd64");
    }

    #[test]
    fn refuses_what_is_not_build_info() {
        assert!(parse_build_info(b"not a go binary at all, no magic here", |_, _| None).is_err());
        let mut cut = b"\xff Go buildinf:\x08\x02".to_vec();
        cut.resize(32, 0);
        cut.push(200); // a version longer than the blob
        assert!(parse_build_info(&cut, |_, _| None).is_err());
    }

    #[test]
    fn parses_release_numbers() {
        assert_eq!(parse_release("go1.19.8"), Some((1, 19)));
        assert_eq!(parse_release("go1.24rc1"), Some((1, 24)));
        assert_eq!(parse_release("devel +abc"), None);
    }
}
