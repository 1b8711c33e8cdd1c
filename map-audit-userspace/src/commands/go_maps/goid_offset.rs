//! Where `goid` sits in `runtime.g`: from the binary's DWARF when it has some (gimli),
//! else from a table of releases checked here. The field moves between releases (152
//! in Go 1.17-1.22, 160 in 1.23-1.24, 152 again in 1.25-1.27), so a wrong guess reads
//! another field.

use std::borrow::Cow;

use anyhow::{Context, Result, anyhow, bail};
use object::{Object, ObjectSection};

use super::{events::GoidOffsetSource, go_binary::GoBinary};

/// The offset and where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoidOffset {
    pub offset: u32,
    pub source: GoidOffsetSource,
}

pub fn find(binary: &GoBinary) -> Result<GoidOffset> {
    match from_dwarf(binary) {
        Ok(offset) => Ok(GoidOffset {
            offset,
            source: GoidOffsetSource::Dwarf,
        }),
        Err(err) => {
            log::debug!("goid offset not read from DWARF: {err:#}");
            without_dwarf(binary.info.release).ok_or_else(|| {
                anyhow!(
                    "{} has no DWARF and go-maps knows the goid offset of Go 1.17 and later only; rebuild without -ldflags=-w",
                    binary.info.go_version
                )
            })
        }
    }
}

/// The newest release whose layout was checked.
const NEWEST_CHECKED: (u32, u32) = (1, 27);

/// A binary without DWARF: the table's offset, or for a release newer than any
/// checked, the newest checked one's (said in `go_maps_started` as `nearest_release`).
fn without_dwarf(release: (u32, u32)) -> Option<GoidOffset> {
    if let Some(offset) = from_table(release) {
        return Some(GoidOffset {
            offset,
            source: GoidOffsetSource::Table,
        });
    }
    (release > NEWEST_CHECKED).then(|| GoidOffset {
        offset: from_table(NEWEST_CHECKED).expect("the newest checked release is in the table"),
        source: GoidOffsetSource::NearestRelease,
    })
}

/// The releases checked on this machine kind (1.19, 1.21, 1.23, 1.24, 1.25, 1.26,
/// 1.27: from their own DWARF) and those between them with the same `runtime.g`
/// layout.
pub fn from_table(release: (u32, u32)) -> Option<u32> {
    match release {
        (1, 17..=22) => Some(152),
        (1, 23..=24) => Some(160),
        (1, 25..=27) => Some(152),
        _ => None,
    }
}

fn from_dwarf(binary: &GoBinary) -> Result<u32> {
    match member_offsets(binary, &[("runtime.g", "goid")])?[..] {
        [Some(offset)] => Ok(offset),
        _ => bail!("the DWARF has no runtime.g.goid"),
    }
}

/// The byte offsets of `(struct, member)` pairs in the binary's DWARF (gimli), in the
/// order asked; `None` for those it does not describe.
pub fn member_offsets(binary: &GoBinary, wanted: &[(&str, &str)]) -> Result<Vec<Option<u32>>> {
    let elf = binary.elf();
    let load = |id: gimli::SectionId| -> Result<Cow<'_, [u8]>, gimli::Error> {
        Ok(elf
            .section_by_name(id.name())
            .and_then(|s| s.uncompressed_data().ok())
            .unwrap_or(Cow::Borrowed(&[])))
    };
    let sections = gimli::DwarfSections::load(load)?;
    let dwarf = sections.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian));
    let mut found = vec![None; wanted.len()];
    let mut units = dwarf.units();
    while let Some(header) = units.next()? {
        let unit = dwarf.unit(header)?;
        let mut entries = unit.entries();
        // The structure being read (an index into `wanted`'s names) and its depth.
        let mut current: Option<(&str, isize)> = None;
        while let Some(entry) = entries.next_dfs()? {
            let depth = entry.depth();
            if current.is_some_and(|(_, d)| depth <= d) {
                current = None;
            }
            let name = match entry.attr_value(gimli::DW_AT_name) {
                Some(value) => dwarf.attr_string(&unit, value)?,
                None => continue,
            };
            let name = std::str::from_utf8(name.slice()).unwrap_or("");
            if entry.tag() == gimli::DW_TAG_structure_type {
                current = wanted
                    .iter()
                    .find(|(s, _)| *s == name)
                    .map(|(s, _)| (*s, depth));
            } else if let Some((structure, _)) = current
                && entry.tag() == gimli::DW_TAG_member
                && let Some(i) = wanted.iter().position(|&w| w == (structure, name))
                && found[i].is_none()
            {
                let location = entry
                    .attr_value(gimli::DW_AT_data_member_location)
                    .with_context(|| format!("{structure}.{name} has no location"))?;
                found[i] = location.udata_value().and_then(|v| u32::try_from(v).ok());
            }
        }
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_covers_the_checked_releases() {
        assert_eq!(from_table((1, 19)), Some(152));
        assert_eq!(from_table((1, 22)), Some(152));
        assert_eq!(from_table((1, 23)), Some(160));
        assert_eq!(from_table((1, 24)), Some(160));
        assert_eq!(from_table((1, 25)), Some(152));
        assert_eq!(from_table((1, 27)), Some(152));
        assert_eq!(from_table((1, 28)), None);
        assert_eq!(from_table((1, 16)), None);
    }

    #[test]
    fn a_newer_release_takes_the_newest_checked_layout_and_says_so() {
        let table = without_dwarf((1, 27)).unwrap();
        assert_eq!(table.source, GoidOffsetSource::Table);
        let newer = without_dwarf((1, 28)).unwrap();
        assert_eq!(newer.offset, table.offset);
        assert_eq!(newer.source, GoidOffsetSource::NearestRelease);
        assert_eq!(without_dwarf((2, 0)).unwrap().offset, table.offset);
        assert_eq!(without_dwarf((1, 16)), None, "older than Go mode supports");
    }
}
