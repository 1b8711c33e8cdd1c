//! The region filters decided from a region's own fields (`--wx-only`,
//! `--shared-only`, `--anon-only`, `--min-size`): one rule, applied by the fault path
//! and by the agent to the regions it reports. `--path` is not here: the kernel has no
//! paths, only the agent's verdict (`region::PATH_*`).

use crate::region::Region;

/// The filters given; booleans are u32 (0 or 1). Part of `AgentConfig`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionFilterRule {
    pub wx_only: u32,
    pub shared_only: u32,
    pub anon_only: u32,
    pub _pad: u32,
    /// Regions shorter than this many bytes are not audited.
    pub min_size: u64,
}
const _: () = assert!(core::mem::size_of::<RegionFilterRule>() == 24);

impl RegionFilterRule {
    /// Whether faults in `region` pass every filter given.
    #[inline(always)]
    pub fn admits(&self, region: &Region) -> bool {
        (self.wx_only == 0 || region.is_wx())
            && (self.shared_only == 0 || region.is_shared())
            && (self.anon_only == 0 || region.is_anonymous())
            && region.end - region.start >= self.min_size
    }
}
