//! Aggregation (the default mode): faults are merged by (process, region, stacks) and
//! reported as one `write_fault` with `count`, `pages`, `first_ts`, `last_ts`, at each
//! flush interval, when the region is unmapped and when the process ends. Stacks are
//! symbolised once per aggregate, not once per fault.
//!
//! Most faults never reach the agent: the kernel counts them in a tally and sends only
//! each tally's first fault of each flush interval, which carries the tally's key and
//! gives the interval's aggregate its first time, address and thread. When it reports,
//! the aggregator folds in what the tally counted in that interval (`KernelTallies`).

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use map_audit_common::{
    PAGE_SIZE,
    region::Region,
    tally::{TallyKey, TallyUpTo},
};

use crate::{
    kernel::kernel_tallies::KernelTallies, output::events::ProcessInfo,
    proc::process_maps::ProcessMaps, stacks::exec_image::ImageMap,
};

/// A fault as the correlator hands it on: stacks still raw addresses.
#[derive(Clone)]
pub struct RawFault {
    pub process: ProcessInfo,
    pub maps: Arc<ProcessMaps>,
    pub image: Arc<ImageMap>,
    pub address: u64,
    pub error_code: u64,
    pub region: Region,
    pub path: Option<Arc<str>>,
    pub user_stack: Vec<u64>,
    pub user_stack_truncated: bool,
    /// Why the kernel's walk stopped (`unwind::STACK_END_*`).
    pub stack_end: u32,
    /// Set when the kernel did the write.
    pub kernel_stack: Option<Vec<u64>>,
    pub ts_ns: u64,
    /// Set when this fault opened a kernel tally (`FaultRecord::stack_hash`).
    pub stack_hash: u64,
    /// The flush interval it happened in (`FaultRecord::epoch`).
    pub epoch: u64,
}

#[derive(PartialEq, Eq, Hash)]
struct Key {
    pid: u32,
    region_id: u64,
    user_stack: Vec<u64>,
    kernel_stack: Option<Vec<u64>>,
    /// The flush interval.
    epoch: u64,
}

impl Key {
    fn of(fault: &RawFault) -> Self {
        Self {
            pid: fault.process.pid,
            region_id: fault.region.id,
            user_stack: fault.user_stack.clone(),
            kernel_stack: fault.kernel_stack.clone(),
            epoch: fault.epoch,
        }
    }
}

/// Faults merged under one key; `first` is the first of them (its address, thread and
/// stacks stand for all).
pub struct Aggregate {
    pub first: RawFault,
    pub count: u64,
    /// Distinct pages written, among the faults the agent saw.
    pub pages: HashSet<u64>,
    /// Pages the kernel's tally counted (`Tally::pages`).
    pub pages_counted_in_kernel: u64,
    pub last_ts_ns: u64,
}

impl Aggregate {
    fn new(first: RawFault) -> Self {
        Self {
            last_ts_ns: first.ts_ns,
            first,
            count: 0,
            pages: HashSet::new(),
            pages_counted_in_kernel: 0,
        }
    }

    /// At least one: an aggregate reopened by a fold without a record of its own
    /// (after a partial unmap, or a fault counted across a flush) may have written only
    /// the page its tally's previous fault wrote, which the tally does not count again.
    pub fn pages(&self) -> u64 {
        (self.pages.len() as u64 + self.pages_counted_in_kernel).max(1)
    }
}

/// A kernel tally the aggregator knows, by the last fault it sent as a record.
struct Tallied {
    opener: RawFault,
    /// The tally's counts already folded into aggregates.
    folded: TallyUpTo,
}

#[derive(Default)]
pub struct Aggregator {
    open: HashMap<Key, Aggregate>,
    tallied: HashMap<TallyKey, Tallied>,
    /// `None` when the kernel does not aggregate (benchmarks, tests).
    kernel: Option<KernelTallies>,
}

impl Aggregator {
    pub fn new(kernel: Option<KernelTallies>) -> Self {
        Self {
            kernel,
            ..Self::default()
        }
    }

    /// Kernel tallies whose removal failed.
    pub fn tally_removals_failed(&self) -> u64 {
        self.kernel.as_ref().map_or(0, |k| k.removals_failed)
    }

    /// Starts the next flush interval in the kernel; returns the one that closes (`None`
    /// without kernel tallies, or when the kernel could not be told).
    pub fn start_interval(&mut self) -> Option<u64> {
        match self.kernel.as_mut()?.next_epoch() {
            Ok(closing) => Some(closing),
            Err(err) => {
                log::warn!("{err:#}");
                None
            }
        }
    }

    pub fn add(&mut self, fault: RawFault) {
        if fault.stack_hash != 0 {
            let tally_key = TallyKey {
                tgid: fault.process.pid,
                _pad: 0,
                region_id: fault.region.id,
                stack_hash: fault.stack_hash,
            };
            // The latest record stands for the tally's faults (its thread and name).
            self.tallied
                .entry(tally_key)
                .and_modify(|t| t.opener = fault.clone())
                .or_insert_with(|| Tallied {
                    opener: fault.clone(),
                    folded: TallyUpTo::default(),
                });
        }
        let page = fault.address / PAGE_SIZE;
        let ts = fault.ts_ns;
        let aggregate = self
            .open
            .entry(Key::of(&fault))
            .or_insert_with(|| Aggregate::new(fault));
        aggregate.count += 1;
        aggregate.pages.insert(page);
        aggregate.last_ts_ns = aggregate.last_ts_ns.max(ts);
    }

    /// Everything of flush interval `closing` and before, oldest first. Each tally is
    /// folded up to the end of `closing`: faults of the next interval wait for the
    /// next flush.
    pub fn take_all(&mut self, closing: u64) -> Vec<Aggregate> {
        self.fold_tallies(|_| true, Some(closing), false);
        self.take(|key| key.epoch <= closing)
    }

    /// The aggregates of one process (it exec'd or exited).
    pub fn take_process(&mut self, pid: u32) -> Vec<Aggregate> {
        self.fold_tallies(|key| key.tgid == pid, None, true);
        self.take(|key| key.pid == pid)
    }

    /// The aggregates of one region (all of it is unmapped); its tallies go too.
    pub fn take_region(&mut self, pid: u32, region_id: u64) -> Vec<Aggregate> {
        self.fold_tallies(
            |key| key.tgid == pid && key.region_id == region_id,
            None,
            true,
        );
        self.take(|key| key.pid == pid && key.region_id == region_id)
    }

    /// Adds what the matching kernel tallies counted since the last fold (up to the end
    /// of interval `closing`, or all of it) to their aggregates, reopening them after a
    /// flush; `retire`: their region or process is gone, so the tallies are removed.
    /// A tally counts only after its interval's first fault came as a record (which the
    /// reader has delivered before the flush), and a fold reads everything up to the
    /// interval it closes, so what grew since the last fold belongs to one interval:
    /// `closing`, or the tally's current one.
    fn fold_tallies(
        &mut self,
        matches: impl Fn(&TallyKey) -> bool,
        closing: Option<u64>,
        retire: bool,
    ) {
        let Some(kernel) = &mut self.kernel else {
            return;
        };
        self.tallied.retain(|tally_key, tallied| {
            if !matches(tally_key) {
                return true;
            }
            if let Some(tally) = kernel.get(tally_key) {
                let upto = tally.up_to(closing.unwrap_or(u64::MAX));
                // (A region's partial unmap may have folded past `closing` already.)
                let count = upto.count.saturating_sub(tallied.folded.count);
                if count > 0 {
                    let key = Key {
                        epoch: closing.unwrap_or(tally.epoch),
                        ..Key::of(&tallied.opener)
                    };
                    let aggregate = self.open.entry(key).or_insert_with(|| {
                        // Reopened after its region was partly unmapped: it starts
                        // after the faults already reported.
                        let mut first = tallied.opener.clone();
                        first.ts_ns = first.ts_ns.max(tallied.folded.last_ts_ns);
                        Aggregate::new(first)
                    });
                    aggregate.count += count;
                    aggregate.pages_counted_in_kernel +=
                        upto.pages.saturating_sub(tallied.folded.pages);
                    aggregate.last_ts_ns = aggregate.last_ts_ns.max(upto.last_ts_ns);
                    tallied.folded = upto;
                }
            }
            if retire {
                kernel.remove(tally_key);
            }
            !retire
        });
    }

    fn take(&mut self, matches: impl Fn(&Key) -> bool) -> Vec<Aggregate> {
        sorted(
            self.open
                .extract_if(|key, _| matches(key))
                .map(|(_, a)| a)
                .collect(),
        )
    }
}

fn sorted(mut aggregates: Vec<Aggregate>) -> Vec<Aggregate> {
    aggregates.sort_by_key(|a| a.first.ts_ns);
    aggregates
}
