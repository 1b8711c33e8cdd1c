//! Rendering of a kernel `Region` for the JSON stream (prot string, flag names, the
//! path the kernel captured).

use map_audit_common::region::{
    MAP_ANONYMOUS, MAP_FIXED, MAP_GROWSDOWN, MAP_HUGETLB, MAP_PRIVATE, MAP_SHARED,
    MAP_SHARED_VALIDATE, MAP_STACK, REGION_HEAP, Region,
};

use serde::Serialize;

use crate::output::addresses;

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

#[derive(Debug, Clone, Serialize)]
pub struct RegionJson {
    /// Writable and executable at once (JIT, shellcode).
    pub wx: bool,
    /// Stable for the region's life; pieces left by a partial unmap keep it.
    pub id: u64,
    pub start: String,
    /// Exclusive.
    pub end: String,
    /// "rw-", "rwx", ...
    pub prot: String,
    /// "shared" or "private", then "anonymous", "fixed", ... as given to mmap.
    pub flags: Vec<&'static str>,
    /// Backing file; null for anonymous memory or when it could not be resolved.
    pub path: Option<String>,
    /// Offset into the file in bytes.
    pub offset: u64,
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
