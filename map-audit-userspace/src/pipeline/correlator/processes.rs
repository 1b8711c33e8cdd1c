//! Process records: a fork's copy of its parent's regions, exec and exit, processes
//! loaded from /proc, and what records lost to a full ring buffer left behind.

use super::*;

impl Correlator {
    /// A new process: it gets a copy of its parent's regions (the kernel lets its faults
    /// fall back to the parent's until this copy is in place).
    pub(super) fn process_fork(&mut self, record: &ProcessRecord, out: &mut Vec<Timed>) {
        let child = record.tgid;
        let parent = self.processes.entry(record.header.tgid).or_default();
        let maps = parent.maps.clone();
        let image = parent.image.clone();
        let inherited: Vec<TrackedRegion> = parent.regions.iter().cloned().collect();
        self.processes.insert(
            child,
            ProcessState {
                maps: maps.clone(),
                ..Default::default()
            },
        );
        // The child starts in its parent's cgroup (the record is the parent's).
        let process = self.process_named(
            child,
            child,
            kernel_string(&record.header.comm),
            record.header.cgroup_id,
        );
        let mut copy = RegionMirror::default();
        for tracked in inherited {
            let region = Region {
                id: self.table.new_region_id(),
                generation: record.generation,
                ..tracked.region
            };
            if tracked.region.path_filter != PATH_PENDING {
                self.table.set_path_verdict(region.id, region.path_filter);
            }
            self.table.insert_if_absent(child, &region);
            copy.insert(TrackedRegion {
                region,
                path: tracked.path.clone(),
            });
            if self.reportable(&region, tracked.path.as_deref()) {
                out.push(region_event(
                    Some(record.header.ts_ns),
                    RegionChange::Mapped(Origin::Fork),
                    process.clone(),
                    &region,
                    tracked.path,
                ));
            }
        }
        self.table.end_fork_fallback(child, record.generation);
        self.processes.insert(
            child,
            ProcessState {
                maps,
                image,
                regions: copy,
                generation: record.generation,
                cgroup_id: process.cgroup.as_ref().map_or(0, |c| c.id),
            },
        );
    }

    /// The process exec'd or exited: its regions leave the kernel table.
    pub(super) fn process_gone(&mut self, record: &ProcessRecord, out: &mut Vec<Timed>) {
        self.flush(|a| a.take_process(record.tgid), out);
        self.process_pages_gone(record.tgid, out);
        if !self.processes.contains_key(&record.tgid) {
            return;
        }
        let process = self.process_named(
            record.tgid,
            record.header.tid,
            kernel_string(&record.header.comm),
            record.header.cgroup_id,
        );
        let Some(state) = self.processes.get_mut(&record.tgid) else {
            return;
        };
        let regions = std::mem::take(&mut state.regions);
        state.image = Arc::default();
        for tracked in regions.into_regions() {
            let region = tracked.region;
            self.table.remove(record.tgid, &region);
            self.table.forget_path_verdict(region.id);
            if self.reportable(&region, tracked.path.as_deref()) {
                self.counters.regions_closed_by_agent += 1;
                out.push(region_event(
                    Some(record.header.ts_ns),
                    RegionChange::Unmapped(range_in(&region, (region.start, region.end))),
                    process.clone(),
                    &region,
                    tracked.path,
                ));
            }
        }
    }

    /// What records lost to a full ring buffer (counted there) would leave in the
    /// kernel's table until the agent stops: processes gone without an exit record
    /// (their regions are closed as at an exit; a pid already reused is left alone), and
    /// entries of regions the agent never heard of. Run at each stats period and before
    /// the final stats, and only once region or process records have been lost: it
    /// checks /proc for every known process and walks the whole table.
    pub fn reclaim_after_losses(&mut self, kernel: &KernelCounters, out: &mut Vec<Timed>) {
        self.collect_unwind_tables();
        if kernel.region_events_lost_ringbuf_full + kernel.process_records_lost_ringbuf_full == 0 {
            return;
        }
        let gone: Vec<u32> = self
            .processes
            .keys()
            .copied()
            .filter(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
            .collect();
        let now_ns = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
            .unwrap_or(0);
        for pid in gone {
            log::debug!("pid {pid} is gone without an exit record: reaping its regions");
            let record = ProcessRecord {
                header: RecordHeader {
                    kind: KIND_PROCESS_EXIT,
                    tgid: pid,
                    tid: pid,
                    _pad: 0,
                    ts_ns: now_ns,
                    cgroup_id: 0,
                    comm: [0; COMM_LEN],
                },
                tgid: pid,
                generation: 0,
            };
            self.process_gone(&record, out);
            self.processes.remove(&pid);
        }
        self.adopt_orphaned_forks(out);
        let swept = self.table.sweep_orphans();
        if swept > 0 {
            log::debug!("removed {swept} region table entries no live process owns");
        }
    }

    /// Children whose fork record was lost fall back to their parents forever: after
    /// a stats period in that state, they are loaded from /proc like a process that
    /// ran before the agent.
    pub(super) fn adopt_orphaned_forks(&mut self, out: &mut Vec<Timed>) {
        let waiting: HashMap<u32, u32> = self
            .table
            .fork_fallbacks()
            .into_iter()
            .map(|(child, fallback)| (child, fallback.child_generation))
            .filter(|(child, generation)| {
                self.processes
                    .get(child)
                    .is_none_or(|s| s.generation != *generation)
            })
            .collect();
        let orphans: Vec<(u32, u32)> = waiting
            .iter()
            .filter(|(child, generation)| self.forks_waiting.get(child) == Some(generation))
            .map(|(&child, &generation)| (child, generation))
            .collect();
        self.forks_waiting = waiting;
        for (child, generation) in orphans {
            log::debug!("pid {child}'s fork record was lost: loading it from /proc");
            match crate::pipeline::proc_seed::load_running(&mut self.table, &self.filter, child) {
                Ok(item) => self.handle(item, out),
                Err(err) => log::debug!("{err:#}"),
            }
            self.table.end_fork_fallback(child, generation);
            self.forks_waiting.remove(&child);
        }
    }

    /// A process that ran before the agent (its mappings are in the table already).
    pub(super) fn seed(
        &mut self,
        pid: u32,
        comm: &str,
        generation: u32,
        regions: Vec<TrackedRegion>,
        out: &mut Vec<Timed>,
    ) {
        self.processes.entry(pid).or_default().generation = generation;
        let process = self.process_named(pid, pid, comm.to_string(), 0);
        for tracked in regions {
            self.unwind_table_for(pid, &tracked.region, tracked.path.as_deref());
            if tracked.region.path_filter != PATH_PENDING {
                self.table
                    .set_path_verdict(tracked.region.id, tracked.region.path_filter);
            }
            if self.reportable(&tracked.region, tracked.path.as_deref()) {
                out.push(region_event(
                    None,
                    RegionChange::Mapped(Origin::Proc),
                    process.clone(),
                    &tracked.region,
                    tracked.path.clone(),
                ));
            }
            self.processes
                .entry(pid)
                .or_default()
                .regions
                .insert(tracked);
        }
    }
}
