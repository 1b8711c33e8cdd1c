//! `map-audit watch`: writes the watchpoints caught, one event each or aggregated by
//! (watch, thread, stack) until the next flush.

use std::collections::HashMap;

use map_audit_common::{
    records::{WATCH_VALUE_UNREAD, WatchRecord},
    unwind::STACK_END_COMPLETE,
};

use super::*;
use crate::{
    kernel::watchpoints::WatchPoint,
    output::events::{CountSummary, WatchStarted, WriteWatch, hex},
};

/// Aggregates by (watched address, thread, stack).
type WatchKey = (u64, u32, Vec<u64>);

/// A write with what it is reported with, taken when its record arrives (the process
/// may be gone by the flush).
pub(super) struct WatchHit {
    record: WatchRecord,
    process: ProcessInfo,
    maps: Arc<ProcessMaps>,
    image: Arc<ImageMap>,
}

/// Writes merged into one `write_watch`.
pub(super) struct WatchAggregate {
    first: WatchHit,
    count: u64,
    last_ts_ns: u64,
    last_value: Option<u64>,
}

#[derive(Default)]
pub(super) struct Watches {
    points: Vec<WatchPoint>,
    aggregates: HashMap<WatchKey, WatchAggregate>,
}

impl Correlator {
    /// The watches set (`threads`: on how many threads), as `watch_started` events.
    pub fn watches_set(
        &mut self,
        pid: u32,
        points: Vec<WatchPoint>,
        threads: usize,
        out: &mut Vec<Timed>,
    ) {
        for point in &points {
            out.push(Timed {
                ts_ns: None,
                body: Body::WatchStarted(WatchStarted {
                    pid,
                    watch: point.index,
                    address: hex(point.address),
                    length: point.length,
                    symbol: point.symbol.clone(),
                    module: point.module.clone(),
                    threads,
                }),
            });
        }
        self.watches.points = points;
    }

    /// A write a watchpoint caught: reported now (every-event mode) or merged.
    pub(super) fn watch_write(&mut self, record: &WatchRecord, out: &mut Vec<Timed>) {
        let value = (record.flags & WATCH_VALUE_UNREAD == 0).then_some(record.value);
        let process = self.process_info(&record.header);
        let state = self.processes.entry(process.pid).or_default();
        let hit = WatchHit {
            record: *record,
            process,
            maps: state.maps.clone(),
            image: state.image.clone(),
        };
        if self.aggregator.is_none() {
            out.push(self.watch_event(hit, value, None));
            return;
        }
        let depth = stack_depth(record.stack_bytes, record.stack.len());
        let key = (
            record.address,
            record.header.tid,
            record.stack[..depth].to_vec(),
        );
        let aggregate = self
            .watches
            .aggregates
            .entry(key)
            .or_insert(WatchAggregate {
                first: hit,
                count: 0,
                last_ts_ns: record.header.ts_ns,
                last_value: value,
            });
        aggregate.count += 1;
        aggregate.last_ts_ns = record.header.ts_ns;
        aggregate.last_value = value;
    }

    /// Reports every write aggregate (at each flush and at the end).
    pub fn flush_watches(&mut self, out: &mut Vec<Timed>) {
        let mut aggregates: Vec<WatchAggregate> =
            self.watches.aggregates.drain().map(|(_, a)| a).collect();
        aggregates.sort_by_key(|a| a.first.record.header.ts_ns);
        for aggregate in aggregates {
            let summary = self.count_summary(
                aggregate.count,
                aggregate.first.record.header.ts_ns,
                aggregate.last_ts_ns,
            );
            let mut event = self.watch_event(aggregate.first, aggregate.last_value, Some(summary));
            event.ts_ns = Some(aggregate.last_ts_ns);
            out.push(event);
        }
    }

    /// What an aggregate of `count` events from `first_ns` to `last_ns` stands for
    /// (`write_watch`, `region_synced`).
    pub(super) fn count_summary(&self, count: u64, first_ns: u64, last_ns: u64) -> CountSummary {
        CountSummary {
            count,
            first_ts: self.clock.format_monotonic(first_ns),
            last_ts: self.clock.format_monotonic(last_ns),
        }
    }

    fn watch_event(
        &mut self,
        hit: WatchHit,
        value: Option<u64>,
        summary: Option<CountSummary>,
    ) -> Timed {
        let WatchHit {
            record,
            process,
            maps,
            image,
        } = hit;
        let depth = stack_depth(record.stack_bytes, record.stack.len());
        let stack = self.user_stack(&maps, &image, &record.stack[..depth]);
        let point = self
            .watches
            .points
            .iter()
            .find(|p| p.address == record.address);
        let length = point.map_or(8, |p| p.length);
        self.counters.watch_hits_delivered += summary.as_ref().map_or(1, |s| s.count);
        self.counters.write_watch_events += 1;
        Timed {
            ts_ns: Some(record.header.ts_ns),
            body: Body::WriteWatch(WriteWatch {
                process,
                watch: point.map_or(u32::MAX, |p| p.index),
                address: hex(record.address),
                symbol: point.and_then(|p| p.symbol.clone()),
                value: value.map(|v| hex(low_bytes(v, length))),
                stack: stack.json.clone(),
                stack_truncated: record.stack_end != STACK_END_COMPLETE || stack.cut,
                stack_end: StackEnd::from_kernel(record.stack_end),
                aggregate: summary,
            }),
        }
    }
}

/// The first `length` bytes of a little-endian word.
fn low_bytes(value: u64, length: u8) -> u64 {
    if length >= 8 {
        value
    } else {
        value & ((1u64 << (8 * u32::from(length))) - 1)
    }
}

#[cfg(test)]
#[test]
fn keeps_the_watched_bytes_only() {
    assert_eq!(low_bytes(0x1122_3344_5566_7788, 1), 0x88);
    assert_eq!(low_bytes(0x1122_3344_5566_7788, 4), 0x5566_7788);
    assert_eq!(low_bytes(u64::MAX, 8), u64::MAX);
}
