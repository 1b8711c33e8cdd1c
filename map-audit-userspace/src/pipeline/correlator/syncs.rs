//! msync: `region_synced` events (one per call, or aggregated by process, region,
//! stack, flags and result until the next flush), the pages of shared file mappings
//! written since their last msync, and the `--unsynced-after` warnings.
//!
//! A page of a shared file mapping takes a write fault when it is first written and
//! again once a write-back (msync, the kernel's writeback, a re-arm round) made it
//! clean: each such fault is a `page_dirtied` record, so the pages written since a
//! sync are exact. A page written again while still dirty does not fault: after an
//! MS_ASYNC (which starts no write-back on Linux) such rewrites are not seen.

use std::collections::HashMap;

use map_audit_common::{
    PAGE_SIZE,
    records::{DirtyPageRecord, MS_ASYNC, MS_INVALIDATE, MS_SYNC, SyncRecord},
    unwind::STACK_END_COMPLETE,
};
use roaring::RoaringTreemap;

use super::*;
use crate::output::events::{
    CountSummary, RegionSynced, RegionUnsynced, SyncFlag, SyncResult, UnsyncedReason,
};

/// The written, not yet synced pages of one shared file region of one process.
struct DirtyPages {
    /// The region as it was when the first of them was written (its pieces keep its
    /// id and the file pages of their addresses).
    tracked: TrackedRegion,
    /// File page indices.
    pages: RoaringTreemap,
    /// The first write since the region last had no unsynced page, and by whom.
    since_ns: u64,
    writer: ProcessInfo,
    /// A `region_unsynced` (unflushed) was written for them.
    warned: bool,
}

impl DirtyPages {
    /// The file pages of `[start, end)`, within the region.
    fn file_pages(&self, start: u64, end: u64) -> std::ops::Range<u64> {
        let region = &self.tracked.region;
        let (start, end) = (start.max(region.start), end.min(region.end));
        if start >= end {
            return 0..0;
        }
        let page = |address: u64| (address - region.start + region.file_offset) / PAGE_SIZE;
        page(start)..page(end - 1) + 1
    }
}

/// msync calls merged into one `region_synced`: same process, region, flags, result
/// and stack.
type SyncKey = (u32, u64, u32, i64, Vec<u64>);

struct SyncAggregate {
    first: SyncCall,
    count: u64,
    duration_ns: u64,
    pages: Option<u64>,
    last_ts_ns: u64,
}

/// A call with what it is reported with, taken when its record arrives.
struct SyncCall {
    record: Box<SyncRecord>,
    process: ProcessInfo,
    path: Option<Arc<str>>,
    maps: Arc<ProcessMaps>,
    image: Arc<ImageMap>,
}

pub(super) struct Syncs {
    /// By process, then region id.
    dirty: HashMap<u32, HashMap<u64, DirtyPages>>,
    aggregates: HashMap<SyncKey, SyncAggregate>,
    /// `--unsynced-after`, in nanoseconds.
    unsynced_after_ns: Option<u64>,
}

impl Syncs {
    pub(super) fn new(unsynced_after: Option<std::time::Duration>) -> Self {
        Self {
            dirty: HashMap::new(),
            aggregates: HashMap::new(),
            unsynced_after_ns: unsynced_after.map(|d| d.as_nanos() as u64),
        }
    }
}

impl Correlator {
    /// A write fault dirtied a page of a shared file mapping.
    pub(super) fn page_dirtied(&mut self, record: &DirtyPageRecord) {
        self.counters.pages_dirtied_delivered += 1;
        let tgid = record.header.tgid;
        let known = self
            .syncs
            .dirty
            .get(&tgid)
            .is_some_and(|regions| regions.contains_key(&record.region_id));
        if !known {
            let Some(tracked) = self
                .processes
                .get(&tgid)
                .and_then(|state| state.regions.find(record.address))
                .cloned()
            else {
                // The region left the copy since (an unmap raced the fault).
                return;
            };
            let writer = self.process_info(&record.header);
            self.syncs.dirty.entry(tgid).or_default().insert(
                record.region_id,
                DirtyPages {
                    tracked,
                    pages: RoaringTreemap::new(),
                    since_ns: record.header.ts_ns,
                    writer,
                    warned: false,
                },
            );
        }
        let dirty = self
            .syncs
            .dirty
            .get_mut(&tgid)
            .and_then(|regions| regions.get_mut(&record.region_id))
            .expect("inserted above");
        if dirty.pages.is_empty() {
            dirty.since_ns = record.header.ts_ns;
            dirty.warned = false;
        }
        dirty.pages.insert(record.file_page);
    }

    /// An msync returned: its pages are counted (and, when it succeeded, synced), and
    /// it is reported now (every-event mode) or merged.
    pub(super) fn region_synced(&mut self, record: Box<SyncRecord>, out: &mut Vec<Timed>) {
        let tgid = record.header.tgid;
        let path = self
            .processes
            .get(&tgid)
            .and_then(|state| state.regions.find(record.region.start))
            .and_then(|t| t.path.clone());
        if !self.filter.audited(&record.region, path.as_deref()) {
            self.counters.msyncs_filtered_by_agent += 1;
            return;
        }
        let (start, end) = (record.start, record.start.saturating_add(record.len));
        let pages = record.region.is_shared_file().then(|| {
            let Some(regions) = self.syncs.dirty.get_mut(&tgid) else {
                return 0;
            };
            let mut pages = 0;
            for dirty in regions.values_mut() {
                let range = dirty.file_pages(start, end);
                pages += if record.ret == 0 {
                    dirty.warned = false;
                    dirty.pages.remove_range(range)
                } else {
                    dirty.pages.range_cardinality(range)
                };
            }
            regions.retain(|_, dirty| !dirty.pages.is_empty());
            pages
        });
        let process = self.process_info(&record.header);
        let state = self.processes.entry(tgid).or_default();
        let call = SyncCall {
            process,
            path,
            maps: state.maps.clone(),
            image: state.image.clone(),
            record,
        };
        if self.aggregator.is_none() {
            out.push(self.sync_event(call, 1, None, pages));
            return;
        }
        let record = &call.record;
        let depth = stack_depth(record.stack_bytes, record.stack.len());
        let key = (
            tgid,
            record.region.id,
            record.flags,
            record.ret,
            record.stack[..depth].to_vec(),
        );
        let (ts_ns, duration_ns) = (record.header.ts_ns, record.duration_ns);
        let aggregate = self.syncs.aggregates.entry(key).or_insert(SyncAggregate {
            first: call,
            count: 0,
            duration_ns: 0,
            pages: None,
            last_ts_ns: ts_ns,
        });
        aggregate.count += 1;
        aggregate.duration_ns += duration_ns;
        aggregate.pages = match (aggregate.pages, pages) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        aggregate.last_ts_ns = ts_ns;
    }

    /// Reports every msync aggregate (at each flush and at the end).
    pub fn flush_syncs(&mut self, out: &mut Vec<Timed>) {
        let mut aggregates: Vec<SyncAggregate> =
            self.syncs.aggregates.drain().map(|(_, a)| a).collect();
        aggregates.sort_by_key(|a| a.first.record.header.ts_ns);
        for aggregate in aggregates {
            let summary = self.count_summary(
                aggregate.count,
                aggregate.first.record.header.ts_ns,
                aggregate.last_ts_ns,
            );
            let mut event = self.sync_event(
                aggregate.first,
                aggregate.duration_ns,
                Some(summary),
                aggregate.pages,
            );
            event.ts_ns = Some(aggregate.last_ts_ns);
            out.push(event);
        }
    }

    fn sync_event(
        &mut self,
        call: SyncCall,
        duration_ns: u64,
        summary: Option<CountSummary>,
        pages: Option<u64>,
    ) -> Timed {
        let SyncCall {
            record,
            process,
            path,
            maps,
            image,
        } = call;
        let depth = stack_depth(record.stack_bytes, record.stack.len());
        let stack = self.user_stack(&maps, &image, &record.stack[..depth]);
        self.counters.msyncs_delivered += summary.as_ref().map_or(1, |s| s.count);
        self.counters.region_synced_events += 1;
        let duration_ns = if summary.is_some() {
            duration_ns
        } else {
            record.duration_ns
        };
        let region = &record.region;
        Timed {
            ts_ns: Some(record.header.ts_ns),
            body: Body::RegionSynced(RegionSynced {
                process,
                region: region_json(region, path.as_deref()),
                range: range_in(
                    region,
                    (record.start, record.start.saturating_add(record.len)),
                ),
                flags: sync_flags(record.flags),
                result: sync_result(record.ret),
                duration_ns,
                pages_written_since_last_sync: pages,
                stack: stack.json.clone(),
                stack_truncated: record.stack_end != STACK_END_COMPLETE || stack.cut,
                stack_end: StackEnd::from_kernel(record.stack_end),
                aggregate: summary,
            }),
        }
    }

    /// `[cut)` of region `id` of `tgid` left the process (`reason`: unmapped, or the
    /// process ended): its unsynced pages go, with a warning under `--unsynced-after`.
    pub(super) fn pages_gone(
        &mut self,
        tgid: u32,
        id: u64,
        cut: (u64, u64),
        reason: UnsyncedReason,
        out: &mut Vec<Timed>,
    ) {
        let Some(regions) = self.syncs.dirty.get_mut(&tgid) else {
            return;
        };
        let Some(dirty) = regions.get_mut(&id) else {
            return;
        };
        let pages = dirty.pages.remove_range(dirty.file_pages(cut.0, cut.1));
        let since_ns = dirty.since_ns;
        let (writer, tracked) = (dirty.writer.clone(), dirty.tracked.clone());
        if dirty.pages.is_empty() {
            regions.remove(&id);
        }
        if pages > 0 && self.syncs.unsynced_after_ns.is_some() {
            out.push(self.unsynced_event(writer, &tracked, reason, pages, since_ns));
        }
    }

    /// Every process's pages in `tgid` go (exit or exec).
    pub(super) fn process_pages_gone(&mut self, tgid: u32, out: &mut Vec<Timed>) {
        let ids: Vec<u64> = self
            .syncs
            .dirty
            .get(&tgid)
            .map(|regions| regions.keys().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.pages_gone(tgid, id, (0, u64::MAX), UnsyncedReason::Exited, out);
        }
        self.syncs.dirty.remove(&tgid);
    }

    /// `--unsynced-after`: warns once for pages unsynced longer than the limit (at
    /// `now_ns`, CLOCK_MONOTONIC).
    pub fn check_unsynced(&mut self, now_ns: u64, out: &mut Vec<Timed>) {
        let Some(limit) = self.syncs.unsynced_after_ns else {
            return;
        };
        let mut due = Vec::new();
        for dirty in self.syncs.dirty.values_mut().flat_map(HashMap::values_mut) {
            if !dirty.warned && now_ns.saturating_sub(dirty.since_ns) >= limit {
                dirty.warned = true;
                due.push((
                    dirty.writer.clone(),
                    dirty.tracked.clone(),
                    dirty.pages.len(),
                    dirty.since_ns,
                ));
            }
        }
        due.sort_by_key(|(_, _, _, since)| *since);
        for (writer, tracked, pages, since_ns) in due {
            out.push(self.unsynced_event(
                writer,
                &tracked,
                UnsyncedReason::Unflushed,
                pages,
                since_ns,
            ));
        }
    }

    fn unsynced_event(
        &mut self,
        writer: ProcessInfo,
        tracked: &TrackedRegion,
        reason: UnsyncedReason,
        pages: u64,
        since_ns: u64,
    ) -> Timed {
        self.counters.region_unsynced_events += 1;
        Timed {
            ts_ns: None,
            body: Body::RegionUnsynced(RegionUnsynced {
                process: writer,
                region: region_json(&tracked.region, tracked.path.as_deref()),
                reason,
                pages,
                since_ts: self.clock.format_monotonic(since_ns),
            }),
        }
    }
}

fn sync_flags(flags: u32) -> Vec<SyncFlag> {
    let mut names: Vec<SyncFlag> = [
        (MS_SYNC, SyncFlag::Sync),
        (MS_ASYNC, SyncFlag::Async),
        (MS_INVALIDATE, SyncFlag::Invalidate),
    ]
    .into_iter()
    .filter(|(bit, _)| flags & bit != 0)
    .map(|(_, name)| name)
    .collect();
    if flags & !(MS_SYNC | MS_ASYNC | MS_INVALIDATE) != 0 {
        names.push(SyncFlag::Unknown);
    }
    names
}

fn sync_result(ret: i64) -> SyncResult {
    if ret == 0 {
        SyncResult::Done(0)
    } else {
        SyncResult::Failed(format!(
            "{:?}",
            nix::errno::Errno::from_raw(ret.unsigned_abs() as i32)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_flags_and_results() {
        assert_eq!(sync_flags(MS_SYNC), [SyncFlag::Sync]);
        assert_eq!(
            sync_flags(MS_ASYNC | MS_INVALIDATE | 0x10),
            [SyncFlag::Async, SyncFlag::Invalidate, SyncFlag::Unknown]
        );
        assert_eq!(sync_result(0), SyncResult::Done(0));
        assert_eq!(sync_result(-22), SyncResult::Failed("EINVAL".into()));
        assert_eq!(sync_result(-12), SyncResult::Failed("ENOMEM".into()));
    }
}
