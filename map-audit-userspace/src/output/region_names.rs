//! Rendering of a kernel `Region` for the JSON stream (prot string, flag names, the
//! path the kernel captured).

use map_audit_common::region::{
    MAP_ANONYMOUS, MAP_FIXED, MAP_GROWSDOWN, MAP_HUGETLB, MAP_PRIVATE, MAP_SHARED,
    MAP_SHARED_VALIDATE, MAP_STACK, REGION_HEAP, Region,
};

use schemars::JsonSchema;
use serde::Serialize;

use crate::output::{
    addresses,
    schema::{Address, Prot},
};

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

/// A region flag: its sharing type, the flags given to mmap, and `heap` (brk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RegionFlag {
    Shared,
    Private,
    /// Neither shared nor private (a kernel mapping).
    UnknownSharing,
    Anonymous,
    Fixed,
    FixedNoreplace,
    Noreserve,
    Populate,
    Hugetlb,
    Stack,
    Growsdown,
    /// The brk heap.
    Heap,
}

/// Names of the mmap flags, sharing type first.
pub fn flag_names(flags: u32) -> Vec<RegionFlag> {
    let mut names = Vec::new();
    names.push(match flags & MAP_SHARED_VALIDATE {
        MAP_SHARED | MAP_SHARED_VALIDATE => RegionFlag::Shared,
        MAP_PRIVATE => RegionFlag::Private,
        _ => RegionFlag::UnknownSharing,
    });
    for (mask, name) in [
        (MAP_ANONYMOUS, RegionFlag::Anonymous),
        (MAP_FIXED, RegionFlag::Fixed),
        (MAP_FIXED_NOREPLACE, RegionFlag::FixedNoreplace),
        (MAP_NORESERVE, RegionFlag::Noreserve),
        (MAP_POPULATE, RegionFlag::Populate),
        (MAP_HUGETLB, RegionFlag::Hugetlb),
        (MAP_STACK, RegionFlag::Stack),
        (MAP_GROWSDOWN, RegionFlag::Growsdown),
        (REGION_HEAP, RegionFlag::Heap),
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

/// A tracked region.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RegionJson {
    /// Writable and executable at once (JIT, shellcode).
    pub wx: bool,
    /// Stable for the region's life; pieces left by a partial unmap keep it.
    pub id: u64,
    #[schemars(with = "Address")]
    pub start: String,
    /// Exclusive.
    #[schemars(with = "Address")]
    pub end: String,
    #[schemars(with = "Prot")]
    pub prot: String,
    /// "shared" or "private", then "anonymous", "fixed", ... as given to mmap.
    #[schemars(length(min = 1))]
    pub flags: Vec<RegionFlag>,
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
            [RegionFlag::Private, RegionFlag::Anonymous]
        );
        assert_eq!(
            flag_names(MAP_SHARED_VALIDATE | MAP_FIXED),
            [RegionFlag::Shared, RegionFlag::Fixed]
        );
    }
}
