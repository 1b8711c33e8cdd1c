//! The region filters as the agent applies them: to region events (only regions that
//! would be audited are reported) and, for `--path`, the verdict the kernel waits for.

use map_audit_common::{
    region::{PATH_MATCHED, PATH_PENDING, PATH_REJECTED, Region},
    region_filter::RegionFilterRule,
};

#[derive(Debug, Clone, Default)]
pub struct RegionFilter {
    /// The rule the kernel applies too (it gets this value in `AgentConfig`).
    pub rule: RegionFilterRule,
    pub path: Option<glob::Pattern>,
}

impl RegionFilter {
    /// The `--path` verdict for a region with this path (anonymous: no path).
    pub fn path_state(&self, path: Option<&str>) -> u32 {
        match (&self.path, path) {
            (None, _) => PATH_MATCHED,
            (Some(glob), Some(path)) if glob.matches(path) => PATH_MATCHED,
            _ => PATH_REJECTED,
        }
    }

    /// Whether faults in `region` (whose path is `path`) are audited: the kernel's
    /// checks, with the `--path` verdict taken here for regions still pending.
    pub fn audited(&self, region: &Region, path: Option<&str>) -> bool {
        let path_ok = match region.path_filter {
            PATH_PENDING => self.path_state(path) == PATH_MATCHED,
            state => state == PATH_MATCHED,
        };
        self.rule.admits(region) && path_ok
    }
}

#[cfg(test)]
mod tests {
    use map_audit_common::region::{MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED};

    use super::*;

    fn region(prot: u32, flags: u32, pages: u64) -> Region {
        Region {
            start: 0x1000,
            end: 0x1000 + pages * 4096,
            prot,
            flags,
            ..Default::default()
        }
    }

    #[test]
    fn each_filter_has_a_matching_and_a_non_matching_case() {
        let rw_anon = region(3, MAP_PRIVATE | MAP_ANONYMOUS, 4);
        let rwx_shared = region(7, MAP_SHARED, 1);
        let wx = RegionFilter {
            rule: RegionFilterRule {
                wx_only: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(wx.audited(&rwx_shared, None) && !wx.audited(&rw_anon, None));
        let shared = RegionFilter {
            rule: RegionFilterRule {
                shared_only: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(shared.audited(&rwx_shared, None) && !shared.audited(&rw_anon, None));
        let anon = RegionFilter {
            rule: RegionFilterRule {
                anon_only: 1,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(anon.audited(&rw_anon, None) && !anon.audited(&rwx_shared, None));
        let size = RegionFilter {
            rule: RegionFilterRule {
                min_size: 2 * 4096,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(size.audited(&rw_anon, None) && !size.audited(&rwx_shared, None));
        let path = RegionFilter {
            path: Some(glob::Pattern::new("/dev/shm/*").unwrap()),
            ..Default::default()
        };
        let pending = Region {
            path_filter: PATH_PENDING,
            ..rwx_shared
        };
        assert!(
            path.audited(&pending, Some("/dev/shm/seg"))
                && !path.audited(&pending, Some("/tmp/seg"))
        );
        assert_eq!(path.path_state(None), PATH_REJECTED);
    }
}
