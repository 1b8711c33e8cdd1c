//! Aggregation (the default mode): faults are merged by (process, region, stacks) and
//! reported as one `write_fault` with `count`, `pages`, `first_ts`, `last_ts`, at each
//! flush interval, when the region is unmapped and when the process ends. Stacks are
//! symbolised once per aggregate, not once per fault.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use map_audit_common::{PAGE_SIZE, region::Region};

use crate::{events::ProcessInfo, exec_image::ImageMap, process_maps::ProcessMaps};

/// A fault as the correlator hands it on: stacks still raw addresses.
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
    /// Set when the kernel did the write.
    pub kernel_stack: Option<Vec<u64>>,
    pub ts_ns: u64,
}

#[derive(PartialEq, Eq, Hash)]
struct Key {
    pid: u32,
    region_id: u64,
    user_stack: Vec<u64>,
    kernel_stack: Option<Vec<u64>>,
}

/// Faults merged under one key; `first` is the first of them (its address, thread and
/// stacks stand for all).
pub struct Aggregate {
    pub first: RawFault,
    pub count: u64,
    /// Distinct pages written.
    pub pages: HashSet<u64>,
    pub last_ts_ns: u64,
}

#[derive(Default)]
pub struct Aggregator {
    open: HashMap<Key, Aggregate>,
}

impl Aggregator {
    pub fn add(&mut self, fault: RawFault) {
        let key = Key {
            pid: fault.process.pid,
            region_id: fault.region.id,
            user_stack: fault.user_stack.clone(),
            kernel_stack: fault.kernel_stack.clone(),
        };
        let page = fault.address / PAGE_SIZE;
        let ts = fault.ts_ns;
        let aggregate = self.open.entry(key).or_insert_with(|| Aggregate {
            first: fault,
            count: 0,
            pages: HashSet::new(),
            last_ts_ns: ts,
        });
        aggregate.count += 1;
        aggregate.pages.insert(page);
        aggregate.last_ts_ns = aggregate.last_ts_ns.max(ts);
    }

    /// Everything open, oldest first.
    pub fn take_all(&mut self) -> Vec<Aggregate> {
        sorted(self.open.drain().map(|(_, a)| a).collect())
    }

    /// The aggregates of one process (it exec'd or exited).
    pub fn take_process(&mut self, pid: u32) -> Vec<Aggregate> {
        self.take(|key| key.pid == pid)
    }

    /// The aggregates of one region (it is being unmapped).
    pub fn take_region(&mut self, pid: u32, region_id: u64) -> Vec<Aggregate> {
        self.take(|key| key.pid == pid && key.region_id == region_id)
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
