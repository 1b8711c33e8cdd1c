//! The agent's copy of one process's tracked regions, updated from the kernel's
//! records in ring-buffer order. It holds what the kernel cannot: file paths, and the
//! list of a process's regions (an LPM trie cannot be iterated in the kernel).

use std::{collections::BTreeMap, sync::Arc};

use map_audit_common::region::Region;

#[derive(Debug, Clone)]
pub struct TrackedRegion {
    pub region: Region,
    pub path: Option<Arc<str>>,
}

#[derive(Debug, Default)]
pub struct RegionMirror {
    by_start: BTreeMap<u64, TrackedRegion>,
}

impl RegionMirror {
    pub fn insert(&mut self, tracked: TrackedRegion) {
        self.by_start.insert(tracked.region.start, tracked);
    }

    /// The tracked region containing `address`.
    pub fn find(&self, address: u64) -> Option<&TrackedRegion> {
        let (_, tracked) = self.by_start.range(..=address).next_back()?;
        (address < tracked.region.end).then_some(tracked)
    }

    /// Applies a change the kernel made to `region` on `[start, end)`: the region is
    /// replaced by its pieces outside the range and, for an mprotect (`new_prot`), the
    /// piece inside with the new protection. Returns the region's path.
    pub fn apply(
        &mut self,
        region: &Region,
        start: u64,
        end: u64,
        new_prot: Option<u32>,
    ) -> Option<Arc<str>> {
        let path = match self.by_start.remove(&region.start) {
            Some(tracked) if tracked.region.id == region.id => tracked.path,
            Some(other) => {
                self.by_start.insert(other.region.start, other);
                None
            }
            None => None,
        };
        for piece in pieces(region, start, end, new_prot) {
            self.insert(TrackedRegion {
                region: piece,
                path: path.clone(),
            });
        }
        path
    }

    /// Removes and returns every region overlapping `[start, end)`.
    pub fn take_overlapping(&mut self, start: u64, end: u64) -> Vec<TrackedRegion> {
        let keys: Vec<u64> = self
            .by_start
            .range(..end)
            .filter(|(_, t)| t.region.end > start)
            .map(|(&key, _)| key)
            .collect();
        keys.into_iter()
            .filter_map(|key| self.by_start.remove(&key))
            .collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &TrackedRegion> {
        self.by_start.values()
    }

    pub fn into_regions(self) -> impl Iterator<Item = TrackedRegion> {
        self.by_start.into_values()
    }
}

/// What `region` becomes after a change on `[start, end)`: the pieces outside the range
/// and, for an mprotect, the piece inside with `new_prot`. Pieces keep the region's id.
pub fn pieces(region: &Region, start: u64, end: u64, new_prot: Option<u32>) -> Vec<Region> {
    let piece = |from: u64, to: u64| Region {
        start: from,
        end: to,
        file_offset: region.file_offset + (from - region.start),
        ..*region
    };
    let (cut_start, cut_end) = (start.max(region.start), end.min(region.end));
    let mut out = Vec::with_capacity(3);
    if region.start < cut_start {
        out.push(piece(region.start, cut_start));
    }
    if let Some(prot) = new_prot
        && cut_start < cut_end
    {
        out.push(Region {
            prot,
            ..piece(cut_start, cut_end)
        });
    }
    if cut_end < region.end {
        out.push(piece(cut_end, region.end));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: u64, end: u64) -> Region {
        Region {
            start,
            end,
            file_offset: 0x1000,
            id: 7,
            prot: 3,
            flags: 0x22,
            ..Default::default()
        }
    }

    #[test]
    fn unmap_in_the_middle_leaves_two_pieces() {
        let r = region(0x10000, 0x20000);
        assert_eq!(
            pieces(&r, 0x14000, 0x18000, None),
            [
                Region { end: 0x14000, ..r },
                Region {
                    start: 0x18000,
                    file_offset: 0x9000,
                    ..r
                },
            ]
        );
        assert!(pieces(&r, 0x10000, 0x20000, None).is_empty());
        assert!(pieces(&r, 0x0, 0x30000, None).is_empty());
    }

    #[test]
    fn partial_mprotect_splits_in_three() {
        let r = region(0x10000, 0x20000);
        let p = pieces(&r, 0x14000, 0x18000, Some(1));
        assert_eq!(p.len(), 3);
        assert_eq!(
            (p[1].start, p[1].end, p[1].prot, p[1].file_offset),
            (0x14000, 0x18000, 1, 0x5000)
        );
        assert_eq!((p[0].prot, p[2].prot), (3, 3));
    }

    #[test]
    fn mirror_apply_and_take() {
        let mut mirror = RegionMirror::default();
        let r = region(0x10000, 0x20000);
        mirror.insert(TrackedRegion {
            region: r,
            path: Some("/f".into()),
        });
        assert_eq!(
            mirror.apply(&r, 0x10000, 0x14000, None).as_deref(),
            Some("/f")
        );
        assert!(mirror.find(0x12000).is_none());
        assert_eq!(mirror.find(0x15000).unwrap().region.start, 0x14000);
        assert_eq!(mirror.take_overlapping(0x0, 0x15000).len(), 1);
        assert!(mirror.iter().next().is_none());
    }
}
