//! Where a module's debug information is, looked up in gdb's and perf's order: the file
//! itself, `/usr/lib/debug/.build-id/xx/rest.debug`, its `.gnu_debuglink` name next to
//! it, in its `.debug/` folder and under `/usr/lib/debug/` + its folder; else a
//! debuginfod server, by build id. Read once per module (one ELF parse of its headers
//! and notes, no DWARF), on the pipeline thread when the module is first mapped.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use object::{Object, ObjectSection, ObjectSegment};

/// The root of the distributions' separate debug files.
pub const DEBUG_ROOT: &str = "/usr/lib/debug";

/// What a module says of its debug information.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModuleDebugInfo {
    /// The GNU build id, hex.
    pub build_id: Option<String>,
    /// The `.gnu_debuglink` file name.
    pub debuglink: Option<String>,
    /// The file has DWARF of its own (`.debug_info` with contents).
    pub has_dwarf: bool,
    /// Loadable segments: (file offset, virtual address, size in the file).
    pub segments: Vec<(u64, u64, u64)>,
}

/// Where a module's debug information is.
#[derive(Debug, PartialEq, Eq)]
pub enum DebugSource {
    /// In the module itself.
    Itself,
    /// In a separate file on this host.
    Local(PathBuf),
    /// Nowhere here: a debuginfod server may have it, by this build id.
    Remote(String),
    /// Nowhere here, and no build id to ask for it.
    Nowhere,
}

impl ModuleDebugInfo {
    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening {} failed", path.display()))?;
        // SAFETY: read-only mapping; a module replaced while mapped is the same hazard
        // every symboliser has, and object checks every offset it reads.
        let data = unsafe { memmap2::Mmap::map(&file) }
            .with_context(|| format!("mapping {} failed", path.display()))?;
        let elf = object::File::parse(&*data)
            .with_context(|| format!("{} is not an ELF file", path.display()))?;
        let build_id = elf.build_id().ok().flatten().map(hex_string);
        let debuglink = elf
            .gnu_debuglink()
            .ok()
            .flatten()
            .map(|(name, _crc)| String::from_utf8_lossy(name).into_owned());
        let has_dwarf = elf
            .section_by_name(".debug_info")
            .is_some_and(|s| s.file_range().is_some_and(|(_, size)| size > 0));
        let segments = elf
            .segments()
            .map(|s| {
                let (offset, size) = s.file_range();
                (offset, s.address(), size)
            })
            .collect();
        Ok(Self {
            build_id,
            debuglink,
            has_dwarf,
            segments,
        })
    }

    /// The address in the module's (and its debug file's) symbol tables of a file
    /// offset, by the loadable segment that holds it.
    pub fn virtual_offset(&self, file_offset: u64) -> Option<u64> {
        self.segments
            .iter()
            .find(|(offset, _, size)| (*offset..offset + size).contains(&file_offset))
            .map(|(offset, address, _)| file_offset - offset + address)
    }

    /// The first place in the lookup order that has the module's debug information;
    /// `exists` checks a path (a parameter for the unit tests).
    pub fn source(
        &self,
        path: &Path,
        debug_root: &Path,
        exists: impl Fn(&Path) -> bool,
    ) -> DebugSource {
        if self.has_dwarf {
            return DebugSource::Itself;
        }
        let mut candidates = Vec::new();
        if let Some(id) = self.build_id.as_deref().filter(|id| id.len() > 2) {
            candidates.push(
                debug_root
                    .join(".build-id")
                    .join(&id[..2])
                    .join(format!("{}.debug", &id[2..])),
            );
        }
        if let (Some(link), Some(dir)) = (&self.debuglink, path.parent()) {
            candidates.push(dir.join(link));
            candidates.push(dir.join(".debug").join(link));
            let relative = dir.strip_prefix("/").unwrap_or(dir);
            candidates.push(debug_root.join(relative).join(link));
        }
        if let Some(found) = candidates
            .into_iter()
            .find(|c| c.as_path() != path && exists(c))
        {
            return DebugSource::Local(found);
        }
        match &self.build_id {
            Some(id) => DebugSource::Remote(id.clone()),
            None => DebugSource::Nowhere,
        }
    }
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripped() -> ModuleDebugInfo {
        ModuleDebugInfo {
            build_id: Some("ab12cd".into()),
            debuglink: Some("prog.debug".into()),
            has_dwarf: false,
            segments: vec![(0, 0, 0x1000), (0x1000, 0x401000, 0x2000)],
        }
    }

    fn source_with(module: &ModuleDebugInfo, present: &[&str]) -> DebugSource {
        module.source(Path::new("/opt/app/prog"), Path::new(DEBUG_ROOT), |p| {
            present.iter().any(|q| Path::new(q) == p)
        })
    }

    #[test]
    fn the_lookup_takes_the_first_place_in_gdbs_order() {
        let all = [
            "/usr/lib/debug/.build-id/ab/12cd.debug",
            "/opt/app/prog.debug",
            "/opt/app/.debug/prog.debug",
            "/usr/lib/debug/opt/app/prog.debug",
        ];
        for first in 0..all.len() {
            assert_eq!(
                source_with(&stripped(), &all[first..]),
                DebugSource::Local(all[first].into()),
                "with {:?}",
                &all[first..]
            );
        }
        assert_eq!(
            source_with(&stripped(), &[]),
            DebugSource::Remote("ab12cd".into())
        );
    }

    #[test]
    fn dwarf_in_the_file_wins_and_no_build_id_means_nowhere_to_ask() {
        let mut module = stripped();
        module.has_dwarf = true;
        assert_eq!(
            source_with(&module, &["/opt/app/prog.debug"]),
            DebugSource::Itself
        );
        let module = ModuleDebugInfo {
            build_id: None,
            ..stripped()
        };
        assert_eq!(source_with(&module, &[]), DebugSource::Nowhere);
    }

    #[test]
    fn a_file_offset_maps_through_its_segment() {
        let module = stripped();
        assert_eq!(module.virtual_offset(0x1234), Some(0x401234));
        assert_eq!(module.virtual_offset(0x10), Some(0x10));
        assert_eq!(module.virtual_offset(0x3000), None);
    }

    #[test]
    fn a_real_binary_reads_its_build_id_and_segments() {
        let module = ModuleDebugInfo::read(Path::new("/proc/self/exe")).unwrap();
        assert!(!module.segments.is_empty());
        assert!(module.build_id.is_some_and(|id| id.len() >= 16));
    }
}
