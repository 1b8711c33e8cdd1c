//! Turns kernel records into events: keeps a copy of each process's regions (with the
//! file paths the kernel cannot give), attaches process details, symbolises stacks,
//! and makes the region-table changes only the agent can make. One part per kind of
//! record: `regions`, `processes`, `faults` (with `held`: aggregates waiting for names),
//! `watches`, `syncs` (msync); `unwind_tables`
//! builds what the kernel's stack walk reads. The kernel's tables are behind `TableMaps`, so `tests` runs it on
//! tables in memory.

mod faults;
mod held;
mod processes;
mod regions;
mod syncs;
mod unwind_tables;
mod watches;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use map_audit_common::{
    COMM_LEN,
    records::{
        ERROR_CODE_UNKNOWN, FAULT_STACK_TRUNCATED, FAULT_VIA_PARENT, FaultRecord,
        KIND_PROCESS_EXIT, MappedFileRecord, ORIGIN_BRK, ORIGIN_EXEC, ORIGIN_MREMAP, ProcessRecord,
        RecordHeader, RegionRecord,
    },
    region::{MREMAP_DONTUNMAP, PATH_PENDING, PROT_EXEC, Region, change_applies},
    region_split::{UNMAP, changes, split},
};

use crate::{
    kernel::kernel_tallies::KernelTallies,
    kernel::region_table::RegionTable,
    kernel::scope_cgroups::ScopeCgroups,
    output::addresses,
    output::clock::Clock,
    output::container_api::ContainerApis,
    output::events::AgentCounters,
    output::events::KernelCounters,
    output::events::{
        Access, AggregateSummary, Body, Origin, ProcessInfo, Range, RegionChange, StackEnd,
        UnsyncedReason, WriteFault,
    },
    output::region_names::{is_file_backed, region_json},
    pipeline::aggregator::{Aggregate, Aggregator, RawFault},
    pipeline::captured_paths::{captured_path, kernel_string},
    pipeline::items::{Item, Timed},
    pipeline::rearm_rounds::RearmRounds,
    pipeline::records::Record,
    pipeline::region_filter::RegionFilter,
    pipeline::region_mirror::{RegionMirror, TrackedRegion},
    proc::cgroup_paths::CgroupPaths,
    proc::process_maps::{MapEntry, ProcessMaps},
    proc::soft_dirty,
    stacks::debuginfod::Debuginfod,
    stacks::exec_image::{ImageMap, TextOffsets},
    stacks::rendered_stacks::{RenderedStack, RenderedStacks},
    stacks::symbolizer::StackSymbolizer,
    stacks::unwind::tables::SharedTables,
};

/// How the correlator reports.
pub struct Options {
    pub filter: RegionFilter,
    /// One event per fault instead of aggregates.
    pub every_event: bool,
    /// Frames per reported stack (`--max-stack-depth`), to keep lines under 16 KiB.
    pub max_stack_depth: usize,
    /// The kernel's fault tallies (aggregated mode).
    pub kernel_tallies: Option<KernelTallies>,
    /// The kernel's unwind tables (`None`: frame pointers only, or no kernel).
    pub unwind_tables: Option<SharedTables>,
    /// `--rearm-interval`: the rounds, with `--rearm-budget`.
    pub rearm_rounds: Option<RearmRounds>,
    /// Print region events (`watch` tracks regions for its stack walks only).
    pub region_events: bool,
    /// `--unsynced-after`.
    pub unsynced_after: Option<std::time::Duration>,
    /// `--cgroup`/`--container`: containers made later join the scope here.
    pub scope_cgroups: Option<ScopeCgroups>,
    /// Debug files from debuginfod servers (`--debuginfod`).
    pub debuginfod: Option<Debuginfod>,
    /// Container names from the runtimes' APIs (`--container-api`).
    pub container_apis: Option<ContainerApis>,
    /// How long an aggregate waits for a debug file being fetched (`--debuginfod-wait`).
    pub debug_file_wait: Duration,
}

impl Options {
    /// No filters, no kernel tallies, no unwind tables: the correlator alone, as unit
    /// tests and the pipeline benchmark run it.
    pub fn without_kernel(every_event: bool) -> Self {
        Self {
            filter: RegionFilter::default(),
            every_event,
            max_stack_depth: 64,
            kernel_tallies: None,
            unwind_tables: None,
            rearm_rounds: None,
            region_events: true,
            unsynced_after: None,
            scope_cgroups: None,
            debuginfod: None,
            debug_file_wait: Duration::ZERO,
            container_apis: None,
        }
    }
}

#[derive(Default)]
struct ProcessState {
    maps: Arc<ProcessMaps>,
    /// Executable mappings from the kernel's records (when /proc was too late).
    image: Arc<ImageMap>,
    regions: RegionMirror,
    /// The scope generation the regions belong to (0: not known yet).
    generation: u32,
    /// The cgroup id of its latest record (0: none yet).
    cgroup_id: u64,
}

pub struct Correlator {
    processes: HashMap<u32, ProcessState>,
    /// Paths the kernel captured, by region id, until the region's `region_mapped`.
    captured_paths: HashMap<u64, Arc<str>>,
    mount_points: HashMap<u32, Arc<str>>,
    text_offsets: TextOffsets,
    symbolizer: StackSymbolizer,
    rendered_stacks: RenderedStacks,
    table: RegionTable,
    filter: RegionFilter,
    /// `None` in every-event mode.
    aggregator: Option<Aggregator>,
    max_stack_depth: usize,
    clock: Clock,
    pub counters: AgentCounters,
    /// Forked children found still falling back to their parents at the last reclaim.
    forks_waiting: HashMap<u32, u32>,
    unwind_tables: Option<SharedTables>,
    rearm_rounds: Option<RearmRounds>,
    watches: watches::Watches,
    syncs: syncs::Syncs,
    region_events: bool,
    cgroups: CgroupPaths,
    scope_cgroups: Option<ScopeCgroups>,
    /// Aggregates waiting for a debug file, until their deadline.
    held: Vec<(Instant, Aggregate)>,
    debug_file_wait: Duration,
    container_apis: Option<ContainerApis>,
}

impl Correlator {
    pub fn new(table: RegionTable, options: Options, clock: Clock) -> Self {
        Self {
            processes: HashMap::new(),
            captured_paths: HashMap::new(),
            mount_points: HashMap::new(),
            text_offsets: TextOffsets::default(),
            symbolizer: StackSymbolizer::new(options.debuginfod),
            rendered_stacks: RenderedStacks::default(),
            table,
            filter: options.filter,
            aggregator: (!options.every_event).then(|| Aggregator::new(options.kernel_tallies)),
            max_stack_depth: options.max_stack_depth,
            clock,
            counters: AgentCounters::default(),
            forks_waiting: HashMap::new(),
            unwind_tables: options.unwind_tables,
            rearm_rounds: options.rearm_rounds,
            watches: watches::Watches::default(),
            syncs: syncs::Syncs::new(options.unsynced_after),
            region_events: options.region_events,
            cgroups: CgroupPaths::new(),
            scope_cgroups: options.scope_cgroups,
            held: Vec::new(),
            debug_file_wait: options.debug_file_wait,
            container_apis: options.container_apis,
        }
    }

    pub fn table_entries(&self) -> crate::kernel::region_table::TableEntries {
        self.table.entries()
    }

    /// The agent's counters, with those of its edits of the kernel's table and of its
    /// unwind tables.
    pub fn agent_counters(&self) -> AgentCounters {
        let unwind = self
            .unwind_tables
            .as_ref()
            .map(|t| t.lock().counters)
            .unwrap_or_default();
        let rounds = self
            .rearm_rounds
            .as_ref()
            .map(|r| r.counters)
            .unwrap_or_default();
        let debuginfod = self.symbolizer.debuginfod_counts();
        let lookups = self
            .container_apis
            .as_ref()
            .map(|apis| apis.counts)
            .unwrap_or_default();
        AgentCounters {
            container_lookups: lookups.answered,
            container_lookup_misses: lookups.missed,
            debuginfod_fetches: debuginfod.fetches,
            debuginfod_cache_hits: debuginfod.cache_hits,
            debuginfod_not_found: debuginfod.not_found,
            debuginfod_misses: debuginfod.misses,
            debuginfod_bytes: debuginfod.bytes,
            rearm_rounds: rounds.rounds,
            processes_rearmed: rounds.processes_rearmed,
            rearm_failed: rounds.rearm_failed,
            rearm_process_gone: rounds.process_gone,
            rearm_skipped_over_budget: rounds.rearm_skipped_over_budget,
            region_blocks_not_inserted: self.table.blocks_not_inserted,
            unwind_table_full: unwind.full,
            unwind_info_missing: unwind.unbuilt,
            unwind_tables_built: unwind.built,
            stacks_finished_by_agent: unwind.stacks_finished,
            stacks_unfinished_by_agent: unwind.stacks_unfinished,
            cgroup_paths_unresolved: self.cgroups.unresolved,
            containers_scoped: self
                .scope_cgroups
                .as_ref()
                .map_or(0, |s| s.containers_scoped),
            kernel_table_edits_failed: self.table.edits_failed
                + unwind.removals_failed
                + self
                    .aggregator
                    .as_ref()
                    .map_or(0, Aggregator::tally_removals_failed),
            ..self.counters
        }
    }

    /// The events for one item (several when an exit or an unmap closes regions).
    pub fn handle(&mut self, item: Item, out: &mut Vec<Timed>) {
        let first = out.len();
        self.handle_item(item, out);
        if !self.region_events {
            let mut index = 0;
            out.retain(|event| {
                index += 1;
                index <= first || !event.body.is_region_event()
            });
        }
    }

    fn handle_item(&mut self, item: Item, out: &mut Vec<Timed>) {
        match item {
            Item::MountPoint(id, point) => {
                self.mount_points.insert(id, point);
            }
            Item::Maps(pid, maps) => {
                log::trace!("pid {pid}: {} mappings", maps.entry_count());
                self.processes.entry(pid).or_default().maps = maps;
            }
            Item::Seed {
                pid,
                comm,
                generation,
                regions,
                settled,
            } => {
                if !settled {
                    self.counters.processes_seeded_unsettled += 1;
                }
                self.seed(pid, &comm, generation, regions, out)
            }
            Item::Record(record) => {
                if !matches!(
                    record,
                    Record::MappedFile(_)
                        | Record::WriteFault(_)
                        | Record::WriteFaultSnapshot(_)
                        | Record::KernelWriteFault(_)
                        | Record::WatchWrite(_)
                        | Record::RegionSynced(_)
                        | Record::PageDirtied(_)
                        | Record::CgroupMade(_)
                ) {
                    self.counters.region_and_process_records_delivered += 1;
                }
                match record {
                    Record::RegionMapped(r) => self.region_mapped(&r, out),
                    Record::RegionUnmapped(r) => self.region_changed(&r, UNMAP, out),
                    Record::RegionProtected(r) => self.region_changed(&r, r.detail, out),
                    Record::UnmapUnresolved(r) => self.range_unresolved(&r, UNMAP, out),
                    Record::ProtectUnresolved(r) => self.range_unresolved(&r, r.detail, out),
                    Record::RemapUnresolved(r) => self.remap_unresolved(&r, out),
                    Record::WriteFault(f) => out.extend(self.write_fault(&f, None)),
                    // (The reader finishes these; unfinished, it is the kernel's part.)
                    Record::WriteFaultSnapshot(s) => out.extend(self.write_fault(&s.fault, None)),
                    Record::KernelWriteFault(k) => {
                        let depth = stack_depth(k.kernel_stack_bytes, k.kernel_stack.len());
                        out.extend(self.write_fault(&k.fault, Some(&k.kernel_stack[..depth])));
                    }
                    Record::WatchWrite(w) => self.watch_write(&w, out),
                    Record::RegionSynced(s) => self.region_synced(s, out),
                    Record::PageDirtied(p) => self.page_dirtied(&p),
                    Record::MappedFile(f) => self.mapped_file(&f),
                    Record::ProcessFork(p) => self.process_fork(&p, out),
                    Record::ExecImage(r) => self.exec_image(&r),
                    Record::ProcessExec(p) => {
                        self.process_gone(&p, out);
                        self.processes.entry(p.tgid).or_default().generation = p.generation;
                    }
                    Record::ProcessExit(p) => {
                        self.process_gone(&p, out);
                        self.processes.remove(&p.tgid);
                    }
                    Record::CgroupMade(c) => {
                        self.counters.cgroup_records_delivered += 1;
                        if let Some(scope) = &mut self.scope_cgroups {
                            let path = kernel_string(&c.path);
                            scope.made(c.hierarchy, c.id, c.level, &path);
                        }
                    }
                }
            }
        }
    }

    /// The user stack `frames`, symbolised and rendered once per distinct stack; its
    /// unnamed frames and a cut to `--max-stack-depth` are counted.
    pub(super) fn user_stack(
        &mut self,
        maps: &Arc<ProcessMaps>,
        image: &Arc<ImageMap>,
        frames: &[u64],
    ) -> Arc<RenderedStack> {
        let symbolizer = &self.symbolizer;
        let stack = self
            .rendered_stacks
            .get(maps, image, frames, self.max_stack_depth, || {
                let stack = symbolizer.symbolize(maps, image, frames);
                (stack.frames, stack.unknown_frames)
            });
        self.counters.frames_unsymbolized += stack.unknown_frames;
        if stack.cut {
            self.counters.stacks_cut_for_output += 1;
        }
        stack
    }

    pub(super) fn process_info(&mut self, header: &RecordHeader) -> ProcessInfo {
        self.process_named(
            header.tgid,
            header.tid,
            kernel_string(&header.comm),
            header.cgroup_id,
        )
    }

    /// What events say of process `pid` (thread `tid`): `cgroup_id` from its record,
    /// else its latest record's, else read from /proc (a process loaded at start).
    pub(super) fn process_named(
        &mut self,
        pid: u32,
        tid: u32,
        comm: String,
        cgroup_id: u64,
    ) -> ProcessInfo {
        let state = self.processes.entry(pid).or_default();
        if cgroup_id != 0 {
            state.cgroup_id = cgroup_id;
        }
        let cgroup = match state.cgroup_id {
            0 => self.cgroups.of_process(pid),
            id => self.cgroups.get(id, pid),
        };
        if let Some(cgroup) = &cgroup {
            state.cgroup_id = cgroup.id;
        }
        let exe = state.maps.exe.clone();
        let mut process = ProcessInfo {
            pid,
            tid,
            comm,
            exe,
            container: cgroup.as_ref().and_then(|c| c.container.clone()),
            kubernetes: cgroup.as_ref().and_then(|c| c.kubernetes.clone()),
            cgroup,
        };
        self.fill_container(&mut process);
        process
    }
}

fn region_event(
    ts_ns: Option<u64>,
    change: RegionChange,
    process: ProcessInfo,
    region: &Region,
    path: Option<Arc<str>>,
) -> Timed {
    Timed {
        ts_ns,
        body: change.event(process, region_json(region, path.as_deref())),
    }
}

/// The part `cut` of `region`, as events print it.
fn range_in(region: &Region, (start, end): (u64, u64)) -> Range {
    Range {
        start: addresses::in_region(start, region.start),
        end: addresses::in_region(end, region.start),
    }
}

/// Frames in a stack buffer from the byte count `bpf_get_stack` returned.
fn stack_depth(bytes: i64, capacity: usize) -> usize {
    if bytes > 0 {
        (bytes as usize / 8).min(capacity)
    } else {
        0
    }
}

#[cfg(test)]
mod tests;
