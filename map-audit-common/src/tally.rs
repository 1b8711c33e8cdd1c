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

/// Counts of the faults not sent as records. Monotonic: the agent remembers what it has
/// reported and never resets them, so no count is lost to a race between a fault and a
/// flush.
///
/// The first fault of each flush interval (`TALLY_EPOCH`) on a tally goes as a record,
/// which gives the interval's aggregate its exact first time, address and thread; the
/// kernel then starts the tally's new interval and keeps where the old one ended
/// (`epoch_start_*`), so the agent folds each fault into the interval it happened in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    /// Faults on a page other than the previous fault's page (the interval's record
    /// counts its own page): the distinct pages when each page is written once.
    pub pages: u64,
    pub last_page: u64,
    pub last_ts_ns: u64,
    /// The interval the tally's counting is in.
    pub epoch: u64,
    /// `count`, `pages` and `last_ts_ns` when `epoch` began: what belongs to earlier
    /// intervals.
    pub epoch_start_count: u64,
    pub epoch_start_pages: u64,
    pub epoch_start_last_ts_ns: u64,
}
const _: () = assert!(core::mem::size_of::<Tally>() == 64);

/// The part of a tally's counts that belongs to interval `closing` and those before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TallyUpTo {
    pub count: u64,
    pub pages: u64,
    pub last_ts_ns: u64,
}

impl Tally {
    /// Counts up to the end of interval `closing`: everything, unless the tally has
    /// already started a later interval.
    pub fn up_to(&self, closing: u64) -> TallyUpTo {
        if self.epoch > closing {
            TallyUpTo {
                count: self.epoch_start_count,
                pages: self.epoch_start_pages,
                last_ts_ns: self.epoch_start_last_ts_ns,
            }
        } else {
            TallyUpTo {
                count: self.count,
                pages: self.pages,
                last_ts_ns: self.last_ts_ns,
            }
        }
    }
}

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
