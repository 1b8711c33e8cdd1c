//! Kernel-side aggregation (the default mode): a fault whose (process, region, user
//! stack) already has a tally is only counted there; the first one is sent as a record
//! carrying `stack_hash`, so the agent can find the tally and fold its counts into the
//! aggregate it reports.

/// A tally's key. Stacks are told apart by a 64-bit hash of their frames: two stacks of
/// one process and region with the same hash would share a tally (odds ~2^-64 a pair).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TallyKey {
    pub tgid: u32,
    pub _pad: u32,
    pub region_id: u64,
    pub stack_hash: u64,
}
const _: () = assert!(core::mem::size_of::<TallyKey>() == 24);

/// Counts since the tally's first fault (which is not included: it went as a record).
/// Monotonic: the agent remembers what it has reported and never resets them, so no
/// count is lost to a race between a fault and a flush.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    /// Faults on a page other than the previous counted fault's page: the distinct
    /// pages when each page is written once (the usual case for write faults).
    pub pages: u64,
    pub last_page: u64,
    pub last_ts_ns: u64,
    /// The flush interval (`TALLY_EPOCH`) of `epoch_first_*`.
    pub epoch: u64,
    /// Time and address of the first fault counted in interval `epoch`.
    pub epoch_first_ts_ns: u64,
    pub epoch_first_address: u64,
}
const _: () = assert!(core::mem::size_of::<Tally>() == 56);

/// FNV-1a over the frames, one 64-bit word at a time.
pub const STACK_HASH_SEED: u64 = 0xcbf2_9ce4_8422_2325;
const STACK_HASH_PRIME: u64 = 0x0000_0100_0000_01b3;

/// One step of the stack hash.
#[inline(always)]
pub fn stack_hash_step(hash: u64, frame: u64) -> u64 {
    (hash ^ frame).wrapping_mul(STACK_HASH_PRIME)
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` integers with no padding (sizes asserted above).
    unsafe impl aya::Pod for super::TallyKey {}
    unsafe impl aya::Pod for super::Tally {}
}
