//! How addresses are printed: absolute (the default), or, with `--redact-addresses`,
//! as offsets into what holds them, so logs shared beyond the host do not give away the
//! memory layout that ASLR randomised. Redacted: a region's `start` is `0x0` and its
//! `end` its size; a fault `address` and a `range` are offsets into the region; a user
//! frame's `addr` is its offset in the mapped file (the form `perf` and `addr2line`
//! take); a kernel frame's `addr` is `0x0` (its symbol and offset stay).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::output::events::hex;

static REDACTED: AtomicBool = AtomicBool::new(false);

/// Set once at start-up, before any event is built.
pub fn set_redacted(redacted: bool) {
    REDACTED.store(redacted, Ordering::Relaxed);
}

fn redacted() -> bool {
    REDACTED.load(Ordering::Relaxed)
}

/// `address`, inside a region that starts at `region_start`.
pub fn in_region(address: u64, region_start: u64) -> String {
    if redacted() {
        hex(address.saturating_sub(region_start))
    } else {
        hex(address)
    }
}

/// A region's `start` and `end`.
pub fn region_bounds(start: u64, end: u64) -> (String, String) {
    (in_region(start, start), in_region(end, start))
}

/// A user frame's `addr`; `file_offset` is where it falls in its mapped file, if it
/// falls in one.
pub fn user_frame(addr: u64, file_offset: Option<u64>) -> String {
    match (redacted(), file_offset) {
        (false, _) => hex(addr),
        (true, Some(offset)) => hex(offset),
        (true, None) => hex(0),
    }
}

/// A kernel frame's `addr`.
pub fn kernel_frame(addr: u64) -> String {
    if redacted() { hex(0) } else { hex(addr) }
}
