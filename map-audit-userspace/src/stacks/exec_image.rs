//! Executable mappings known from the kernel's own records (the exec'd program's text,
//! libraries mapped executable), so stacks resolve even when the process was gone
//! before the agent could read /proc/PID/maps.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

use object::{
    Endianness,
    elf::{PF_X, PT_LOAD},
    read::elf::{ElfFile64, ProgramHeader},
};

use crate::proc::process_maps::MapEntry;

/// File offsets of programs' text, by path (each program is read once).
#[derive(Default)]
pub struct TextOffsets {
    by_path: HashMap<Arc<str>, Option<u64>>,
}

impl TextOffsets {
    /// The mapping of an exec'd program whose text the kernel reported at
    /// `[start_code, end_code)`: `start_code` is the lowest executable segment's
    /// address, so its file offset is that segment's `p_offset`.
    pub fn image_entry(
        &mut self,
        path: &Arc<str>,
        start_code: u64,
        end_code: u64,
    ) -> Option<MapEntry> {
        let offset = *self
            .by_path
            .entry(path.clone())
            .or_insert_with(|| text_offset(path));
        Some(MapEntry {
            start: start_code,
            end: end_code,
            offset: offset?,
            path: Some(PathBuf::from(&**path)),
            executable: true,
            file: None,
        })
    }
}

/// `p_offset` of the executable PT_LOAD segment with the lowest address.
fn text_offset(path: &str) -> Option<u64> {
    let data = std::fs::read(path).ok()?;
    let elf = ElfFile64::<Endianness>::parse(&*data).ok()?;
    let endian = elf.endian();
    elf.elf_program_headers()
        .iter()
        .filter(|ph| ph.p_type(endian) == PT_LOAD && ph.p_flags(endian) & PF_X != 0)
        .min_by_key(|ph| ph.p_vaddr(endian))
        .map(|ph| ph.p_offset(endian))
}

/// Record-derived executable mappings of one process, kept sorted.
#[derive(Debug, Default, Clone)]
pub struct ImageMap {
    entries: Vec<MapEntry>,
}

impl ImageMap {
    pub fn insert(&mut self, entry: MapEntry) {
        self.entries
            .retain(|e| e.end <= entry.start || entry.end <= e.start);
        let at = self.entries.partition_point(|e| e.start < entry.start);
        self.entries.insert(at, entry);
    }

    pub fn find(&self, address: u64) -> Option<&MapEntry> {
        let index = self.entries.partition_point(|e| e.start <= address);
        let entry = self.entries.get(index.checked_sub(1)?)?;
        (address < entry.end).then_some(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_text_segment_of_this_test_binary() {
        let exe = std::env::current_exe().unwrap();
        let offset = text_offset(exe.to_str().unwrap()).expect("an ELF with an executable segment");
        let size = std::fs::metadata(&exe).unwrap().len();
        assert!(offset < size);
        assert_eq!(text_offset("/etc/hostname"), None, "not an ELF");
    }

    #[test]
    fn newer_entries_replace_overlapping_ones() {
        let entry = |start, end| MapEntry {
            start,
            end,
            offset: 0,
            path: None,
            executable: true,
            file: None,
        };
        let mut map = ImageMap::default();
        map.insert(entry(0x1000, 0x3000));
        map.insert(entry(0x5000, 0x6000));
        map.insert(entry(0x2000, 0x4000));
        assert!(map.find(0x1500).is_none());
        assert_eq!(map.find(0x3500).unwrap().start, 0x2000);
        assert_eq!(map.find(0x5500).unwrap().start, 0x5000);
    }
}
