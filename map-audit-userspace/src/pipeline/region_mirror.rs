//! The agent's copy of one process's tracked regions, updated from the kernel's
//! records in ring-buffer order. It holds what the kernel cannot: file paths, and the
//! list of a process's regions (an LPM trie cannot be iterated in the kernel).

use std::{collections::BTreeMap, sync::Arc};

use map_audit_common::{
    region::Region,
    region_split::{UNMAP, changes, split},
};

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
    /// Adds `tracked`; whatever it overlaps is replaced and returned (the kernel gave
    /// the range to this region, so what the copy held there is gone).
    pub fn insert(&mut self, tracked: TrackedRegion) -> Vec<TrackedRegion> {
        let region = tracked.region;
        let overlapped = self.take_overlapping(region.start, region.end);
        let mut gone = Vec::new();
        for old in overlapped {
            if old.region.id != region.id {
                gone.push(old.clone());
            }
            let split = split(&old.region, region.start, region.end, UNMAP);
            for piece in split.pieces() {
                self.put(TrackedRegion {
                    region: old.region.piece(piece),
                    path: old.path.clone(),
                });
            }
        }
        self.put(tracked);
        gone
    }

    fn put(&mut self, tracked: TrackedRegion) {
        self.by_start.insert(tracked.region.start, tracked);
    }

    /// The tracked region containing `address`.
    pub fn find(&self, address: u64) -> Option<&TrackedRegion> {
        let (_, tracked) = self.by_start.range(..=address).next_back()?;
        (address < tracked.region.end).then_some(tracked)
    }

    /// Whether any piece of region `id` is left.
    pub fn contains_id(&self, id: u64) -> bool {
        self.by_start.values().any(|t| t.region.id == id)
    }

    /// Applies a change the kernel made to `region` on `[start, end)` (`new_prot` or
    /// `UNMAP`): the region is replaced by its pieces (the one rule,
    /// `map_audit_common::region_split`). Returns the region's path.
    pub fn apply(
        &mut self,
        region: &Region,
        start: u64,
        end: u64,
        new_prot: u32,
    ) -> Option<Arc<str>> {
        let path = match self.by_start.remove(&region.start) {
            Some(tracked) if tracked.region.id == region.id => tracked.path,
            Some(other) => {
                self.put(other);
                None
            }
            None => None,
        };
        if !changes(region, new_prot) {
            self.put(TrackedRegion {
                region: *region,
                path: path.clone(),
            });
            return path;
        }
        for piece in split(region, start, end, new_prot).pieces() {
            self.put(TrackedRegion {
                region: region.piece(piece),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: u64, end: u64, id: u64) -> Region {
        Region {
            start,
            end,
            file_offset: 0x1000,
            id,
            prot: 3,
            flags: 0x22,
            ..Default::default()
        }
    }

    fn tracked(region: Region) -> TrackedRegion {
        TrackedRegion {
            region,
            path: Some("/f".into()),
        }
    }

    #[test]
    fn mirror_apply_and_take() {
        let mut mirror = RegionMirror::default();
        let r = region(0x10000, 0x20000, 7);
        mirror.insert(tracked(r));
        assert_eq!(
            mirror.apply(&r, 0x10000, 0x14000, UNMAP).as_deref(),
            Some("/f")
        );
        assert!(mirror.find(0x12000).is_none());
        assert_eq!(mirror.find(0x15000).unwrap().region.start, 0x14000);
        assert!(mirror.contains_id(7));
        assert_eq!(mirror.take_overlapping(0x0, 0x15000).len(), 1);
        assert!(mirror.iter().next().is_none());
    }

    #[test]
    fn same_protection_leaves_the_region_whole() {
        let mut mirror = RegionMirror::default();
        let r = region(0x10000, 0x20000, 7);
        mirror.insert(tracked(r));
        mirror.apply(&r, 0x8000, 0x14000, 3);
        assert_eq!(mirror.iter().count(), 1);
        assert_eq!(mirror.find(0x1f000).unwrap().region, r);
    }

    #[test]
    fn a_new_region_replaces_what_it_overlaps() {
        let mut mirror = RegionMirror::default();
        mirror.insert(tracked(region(0x10000, 0x20000, 7)));
        let gone = mirror.insert(tracked(region(0x18000, 0x28000, 8)));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].region.id, 7);
        assert_eq!(mirror.find(0x17000).unwrap().region.end, 0x18000);
        assert_eq!(mirror.find(0x19000).unwrap().region.id, 8);
        // The heap growing in place (same id) replaces itself without a loss.
        assert!(
            mirror
                .insert(tracked(region(0x18000, 0x30000, 8)))
                .is_empty()
        );
        assert_eq!(mirror.iter().count(), 2);
    }

    /// One change of a process's mappings, in pages of a 64-page window.
    #[derive(Debug, Clone)]
    enum Change {
        Map { start: u64, pages: u64, prot: u32 },
        Unmap { start: u64, pages: u64 },
        Protect { start: u64, pages: u64, prot: u32 },
    }

    fn change() -> impl proptest::strategy::Strategy<Value = Change> {
        use proptest::prelude::*;
        let range = (0u64..64, 1u64..24);
        prop_oneof![
            (range.clone(), 1u32..8).prop_map(|((start, pages), prot)| Change::Map {
                start,
                pages,
                prot
            }),
            range
                .clone()
                .prop_map(|(start, pages)| Change::Unmap { start, pages }),
            (range, 1u32..8).prop_map(|((start, pages), prot)| Change::Protect {
                start,
                pages,
                prot
            }),
        ]
    }

    const PAGE: u64 = 4096;

    /// The plain model: each page's region id and protection.
    type Pages = std::collections::BTreeMap<u64, (u64, u32)>;

    /// Applies `change` to the mirror as the kernel's records would (each region the
    /// range touches gets the change), and to the model page by page.
    fn apply(mirror: &mut RegionMirror, model: &mut Pages, change: &Change, id: u64) {
        let (start, pages, prot) = match *change {
            Change::Map { start, pages, prot } => {
                let r = Region {
                    prot,
                    ..region(start * PAGE, (start + pages) * PAGE, id)
                };
                mirror.insert(tracked(r));
                for page in start..start + pages {
                    model.insert(page, (id, prot));
                }
                return;
            }
            Change::Unmap { start, pages } => (start, pages, UNMAP),
            Change::Protect { start, pages, prot } => (start, pages, prot),
        };
        let (from, to) = (start * PAGE, (start + pages) * PAGE);
        let touched: Vec<Region> = mirror
            .iter()
            .filter(|t| t.region.start < to && t.region.end > from)
            .map(|t| t.region)
            .collect();
        for r in touched {
            mirror.apply(&r, from, to, prot);
        }
        for page in start..start + pages {
            if prot == UNMAP {
                model.remove(&page);
            } else if let Some(entry) = model.get_mut(&page) {
                entry.1 = prot;
            }
        }
    }

    proptest::proptest! {
        /// Under any sequence of mmap/munmap/mprotect, every page of the mirror holds the
        /// region and protection the model says, and its regions never overlap.
        #[test]
        fn the_mirror_follows_a_page_model(changes in proptest::collection::vec(change(), 1..40)) {
            let mut mirror = RegionMirror::default();
            let mut model = Pages::new();
            for (id, change) in changes.iter().enumerate() {
                apply(&mut mirror, &mut model, change, id as u64 + 1);
                let mut end = 0;
                for t in mirror.iter() {
                    proptest::prop_assert!(t.region.start >= end && t.region.start < t.region.end);
                    end = t.region.end;
                }
                for page in 0..90 {
                    let found = mirror
                        .find(page * PAGE)
                        .map(|t| (t.region.id, t.region.prot));
                    proptest::prop_assert_eq!(found, model.get(&page).copied(), "page {} after {:?}", page, change);
                }
            }
        }
    }
}
