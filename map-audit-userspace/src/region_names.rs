//! Rendering of a kernel `Region` for the JSON stream (prot string, flag names, the
//! path the kernel captured).

use map_audit_common::region::{
    MAP_ANONYMOUS, MAP_FIXED, MAP_GROWSDOWN, MAP_HUGETLB, MAP_PRIVATE, MAP_SHARED,
    MAP_SHARED_VALIDATE, MAP_STACK, REGION_HEAP, Region,
};

use map_audit_common::records::MappedFileRecord;

use crate::{addresses, correlator::kernel_string, events::RegionJson, mount_points};

const MAP_NORESERVE: u32 = 0x4000;
const MAP_POPULATE: u32 = 0x8000;
const MAP_FIXED_NOREPLACE: u32 = 0x100000;

/// "rwx" style protection, as in /proc/PID/maps.
pub fn prot_string(prot: u32) -> String {
    let bit = |mask, c| if prot & mask != 0 { c } else { '-' };
    [bit(0x1, 'r'), bit(0x2, 'w'), bit(0x4, 'x')]
        .iter()
        .collect()
}

/// Names of the mmap flags, sharing type first.
pub fn flag_names(flags: u32) -> Vec<&'static str> {
    let mut names = Vec::new();
    names.push(match flags & MAP_SHARED_VALIDATE {
        MAP_SHARED | MAP_SHARED_VALIDATE => "shared",
        MAP_PRIVATE => "private",
        _ => "unknown_sharing",
    });
    for (mask, name) in [
        (MAP_ANONYMOUS, "anonymous"),
        (MAP_FIXED, "fixed"),
        (MAP_FIXED_NOREPLACE, "fixed_noreplace"),
        (MAP_NORESERVE, "noreserve"),
        (MAP_POPULATE, "populate"),
        (MAP_HUGETLB, "hugetlb"),
        (MAP_STACK, "stack"),
        (MAP_GROWSDOWN, "growsdown"),
        (REGION_HEAP, "heap"),
    ] {
        if flags & mask != 0 {
            names.push(name);
        }
    }
    names
}

/// Whether the region is backed by a file (has a path to resolve).
pub fn is_file_backed(region: &Region) -> bool {
    region.flags & MAP_ANONYMOUS == 0
}

/// The JSON form of `region`, with its resolved `path`.
pub fn region_json(region: &Region, path: Option<&str>) -> RegionJson {
    let (start, end) = addresses::region_bounds(region.start, region.end);
    RegionJson {
        wx: region.is_wx(),
        id: region.id,
        start,
        end,
        prot: prot_string(region.prot),
        flags: flag_names(region.flags),
        path: path.map(str::to_string),
        offset: region.file_offset,
    }
}

/// A file's path as the kernel captured it at mmap time.
pub struct CapturedPath {
    pub path: String,
    /// Cut short: deeper than the kernel walks (a leading "..."), or a name longer
    /// than its buffer (ending in "...").
    pub cut: bool,
}

/// The path in `record` under `mount_point`; `None` when the kernel captured no name.
/// The record's bytes come from the kernel and are only trusted as far as checked here.
pub fn captured_path(record: &MappedFileRecord, mount_point: Option<&str>) -> Option<CapturedPath> {
    let depth = (record.depth as usize).min(record.names.len());
    if depth == 0 {
        return None;
    }
    let names: Vec<String> = record.names[..depth]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut name = kernel_string(n);
            if record.cut_names & (1 << i) != 0 {
                name.push_str("...");
            }
            name
        })
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut path = mount_points::join(mount_point, &names);
    if record.truncated != 0 {
        path.insert_str(0, "...");
    }
    Some(CapturedPath {
        path,
        cut: record.truncated != 0 || record.cut_names != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prot_and_flags() {
        assert_eq!(prot_string(0x3), "rw-");
        assert_eq!(prot_string(0x7), "rwx");
        assert_eq!(
            flag_names(MAP_PRIVATE | MAP_ANONYMOUS),
            ["private", "anonymous"]
        );
        assert_eq!(
            flag_names(MAP_SHARED_VALIDATE | MAP_FIXED),
            ["shared", "fixed"]
        );
    }
}
