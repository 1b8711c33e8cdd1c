//! The one rule for what a region becomes when a range of it is unmapped or given a new
//! protection: used by the kernel's table edits and by the agent's copy of the table,
//! so the two can never disagree.

use crate::region::Region;

/// `new_prot` of an unmap.
pub const UNMAP: u32 = u32::MAX;

/// A piece of a region left by a change: `[start, end)` with protection `prot`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Piece {
    pub start: u64,
    pub end: u64,
    pub prot: u32,
    pub _pad: u32,
}

/// The result of a change on a region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Split {
    /// The part of the region the change covers.
    pub cut_start: u64,
    pub cut_end: u64,
    /// What replaces the region: the parts outside the cut and, for an mprotect, the
    /// cut with its new protection. Empty when the whole region is unmapped.
    pub pieces: [Piece; 3],
    pub len: u32,
}

impl Split {
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces[..(self.len as usize).min(3)]
    }
}

/// Whether a change to `new_prot` (or `UNMAP`) changes `region` at all: an mprotect to
/// the protection it already has leaves it whole.
#[inline(always)]
pub fn changes(region: &Region, new_prot: u32) -> bool {
    new_prot != region.prot
}

/// What `region` becomes after `new_prot` (or `UNMAP`) is applied to `[start, end)`.
/// Pieces keep the region's id (see `Region::piece`).
#[inline(always)]
pub fn split(region: &Region, start: u64, end: u64, new_prot: u32) -> Split {
    let mut out = Split::default();
    let (cut_start, cut_end) = for_each_piece(region, start, end, new_prot, |piece| {
        if (out.len as usize) < out.pieces.len() {
            out.pieces[out.len as usize] = piece;
            out.len += 1;
        }
    });
    out.cut_start = cut_start;
    out.cut_end = cut_end;
    out
}

/// `split` without the array (eBPF programs have 512 bytes of stack): calls `piece`
/// for each piece, in address order, and returns the cut.
#[inline(always)]
pub fn for_each_piece(
    region: &Region,
    start: u64,
    end: u64,
    new_prot: u32,
    mut piece: impl FnMut(Piece),
) -> (u64, u64) {
    // The change clamped into the region: a range beside it cuts nothing (the
    // property test found pieces reaching past the region when it did).
    let cut_start = start.max(region.start).min(region.end);
    let cut_end = end.max(cut_start).min(region.end);
    let mut push = |start: u64, end: u64, prot: u32| {
        piece(Piece {
            start,
            end,
            prot,
            _pad: 0,
        })
    };
    if region.start < cut_start {
        push(region.start, cut_start, region.prot);
    }
    if new_prot != UNMAP && cut_start < cut_end {
        push(cut_start, cut_end, new_prot);
    }
    if cut_end < region.end {
        push(cut_end, region.end, region.prot);
    }
    (cut_start, cut_end)
}

impl Region {
    /// This region cut down to `piece` (same id; the file offset follows the start).
    #[inline(always)]
    pub fn piece(&self, piece: &Piece) -> Region {
        Region {
            start: piece.start,
            end: piece.end,
            file_offset: self.file_offset + (piece.start - self.start),
            prot: piece.prot,
            ..*self
        }
    }
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
        let s = split(&r, 0x14000, 0x18000, UNMAP);
        assert_eq!((s.cut_start, s.cut_end), (0x14000, 0x18000));
        assert_eq!(s.len, 2);
        assert_eq!(r.piece(&s.pieces[0]), Region { end: 0x14000, ..r });
        assert_eq!(
            r.piece(&s.pieces[1]),
            Region {
                start: 0x18000,
                file_offset: 0x9000,
                ..r
            }
        );
        assert_eq!(split(&r, 0x10000, 0x20000, UNMAP).len, 0);
        assert_eq!(split(&r, 0x0, 0x30000, UNMAP).len, 0);
    }

    #[test]
    fn partial_mprotect_splits_in_three() {
        let r = region(0x10000, 0x20000);
        let s = split(&r, 0x14000, 0x18000, 1);
        assert_eq!(s.len, 3);
        let middle = r.piece(&s.pieces[1]);
        assert_eq!(
            (middle.start, middle.end, middle.prot, middle.file_offset),
            (0x14000, 0x18000, 1, 0x5000)
        );
        assert_eq!((s.pieces[0].prot, s.pieces[2].prot), (3, 3));
    }

    #[test]
    fn same_protection_is_no_change() {
        let r = region(0x10000, 0x20000);
        assert!(!changes(&r, 3));
        assert!(changes(&r, 1));
        assert!(changes(&r, UNMAP));
    }

    proptest::proptest! {
        /// Against a page-by-page model: every page of the region is in exactly one
        /// piece, with the new protection inside the change and the old one outside,
        /// except an unmap's pages, which are in none; pieces are in address order and
        /// keep the file offset of their pages.
        #[test]
        fn pieces_match_a_page_model(
            start in 0u64..32, pages in 1u64..32,
            cut_from in 0u64..64, cut_pages in 1u64..32,
            new_prot in proptest::prop_oneof![proptest::strategy::Just(UNMAP), 0u32..8],
        ) {
            const PAGE: u64 = 4096;
            let r = region(start * PAGE, (start + pages) * PAGE);
            let (from, to) = (cut_from * PAGE, (cut_from + cut_pages) * PAGE);
            let split = split(&r, from, to, new_prot);
            let mut end = 0;
            for piece in split.pieces() {
                proptest::prop_assert!(piece.start >= end && piece.start < piece.end);
                end = piece.end;
            }
            for page in start..start + pages {
                let at = page * PAGE;
                let inside = at >= from && at < to;
                let holding: u32 = split
                    .pieces()
                    .iter()
                    .filter(|p| p.start <= at && at < p.end)
                    .map(|p| {
                        let expected = if inside { new_prot } else { r.prot };
                        assert_eq!(p.prot, expected, "page {page}");
                        assert_eq!(r.piece(p).file_offset + (at - p.start), r.file_offset + (at - r.start));
                        1
                    })
                    .sum();
                let expected = u32::from(!(inside && new_prot == UNMAP));
                proptest::prop_assert_eq!(holding, expected, "page {}", page);
            }
        }
    }
}
