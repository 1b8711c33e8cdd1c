//! Decomposition of an address range into naturally aligned power-of-two blocks.
//!
//! The region table is an LPM trie: a range `[start, end)` is stored as the minimal set of
//! aligned blocks that cover it, one trie entry each, so that a fault at any address inside
//! the range finds its region with a single longest-prefix lookup. A page-aligned range of
//! a 47-bit address space needs at most 2 * 35 blocks.
//!
//! The helpers are loop-free so the eBPF verifier sees straight-line code.

/// Upper bound on the number of blocks of one range (2 per address bit above the page).
pub const MAX_BLOCKS: usize = 2 * (64 - 12);

/// log2 of the largest naturally aligned power-of-two block that starts at `start` and
/// fits in `[start, end)`. `start < end` is required.
#[inline(always)]
pub fn block_order(start: u64, end: u64) -> u32 {
    // Alignment of `start`: its lowest set bit (address 0 is aligned to everything).
    let align = if start == 0 {
        1u64 << 63
    } else {
        start & start.wrapping_neg()
    };
    let fit = highest_power_of_two_at_most(end - start);
    log2_of_power_of_two(if align < fit { align } else { fit })
}

/// The largest power of two `<= x`, for `x > 0`.
#[inline(always)]
pub fn highest_power_of_two_at_most(x: u64) -> u64 {
    let mut v = x;
    v |= v >> 1;
    v |= v >> 2;
    v |= v >> 4;
    v |= v >> 8;
    v |= v >> 16;
    v |= v >> 32;
    v - (v >> 1)
}

/// log2 of a power of two: the number of bits set below it, counted without a
/// branch, a loop or a lookup table. Branches gave the verifier one exact value per
/// path, 64 paths through every table edit, which 6.18 did not prune.
#[inline(always)]
pub fn log2_of_power_of_two(x: u64) -> u32 {
    let v = x.wrapping_sub(1);
    let v = v - ((v >> 1) & 0x5555_5555_5555_5555);
    let v = (v & 0x3333_3333_3333_3333) + ((v >> 2) & 0x3333_3333_3333_3333);
    let v = (v + (v >> 4)) & 0x0F0F_0F0F_0F0F_0F0F;
    (v.wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn decompose(mut start: u64, end: u64) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        while start < end {
            let order = block_order(start, end);
            out.push((start, order));
            start += 1 << order;
        }
        out
    }

    #[test]
    fn aligned_power_of_two_range_is_one_block() {
        assert_eq!(
            decompose(0x7f00_0000_0000, 0x7f00_1000_0000),
            [(0x7f00_0000_0000, 28)]
        );
    }

    #[test]
    fn unaligned_range_is_covered_exactly_and_within_bound() {
        for (start, end) in [
            (0x1000, 0x2000),
            (0x7f12_3456_7000, 0x7f12_4567_8000),
            (0x1000, 0x7fff_ffff_f000),
            (0x0, 0x3000),
        ] {
            let blocks = decompose(start, end);
            assert!(
                blocks.len() <= MAX_BLOCKS,
                "{start:#x}-{end:#x}: {}",
                blocks.len()
            );
            let mut cursor = start;
            for (block_start, order) in blocks {
                assert_eq!(block_start, cursor);
                assert_eq!(block_start % (1 << order), 0, "block not aligned");
                cursor += 1 << order;
            }
            assert_eq!(cursor, end);
        }
    }

    #[test]
    fn log2_matches_trailing_zeros() {
        for bit in 0..64 {
            assert_eq!(log2_of_power_of_two(1 << bit), bit);
        }
    }
}
