//! Turns kernel records into events: keeps a copy of each process's regions (with the
//! file paths the kernel cannot give), attaches process details, symbolises stacks,
//! and makes the region-table changes only the agent can make.

use std::{collections::HashMap, path::PathBuf, sync::Arc};

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
    output::addresses,
    output::clock::Clock,
    output::events::AgentCounters,
    output::events::KernelCounters,
    output::events::{
        AggregateSummary, Body, ProcessInfo, Range, RegionEvent, RegionKind, WriteFault,
    },
    output::region_names::{is_file_backed, region_json},
    pipeline::aggregator::{Aggregate, Aggregator, RawFault},
    pipeline::captured_paths::{captured_path, kernel_string},
    pipeline::items::{Item, Timed},
    pipeline::records::Record,
    pipeline::region_filter::RegionFilter,
    pipeline::region_mirror::{RegionMirror, TrackedRegion},
    proc::process_maps::{MapEntry, ProcessMaps},
    stacks::exec_image::{ImageMap, TextOffsets},
    stacks::rendered_stacks::RenderedStacks,
    stacks::symbolizer::StackSymbolizer,
    stacks::unwind::tables::UnwindTables,
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
    pub unwind_tables: Option<UnwindTables>,
}

#[derive(Default)]
struct ProcessState {
    maps: Arc<ProcessMaps>,
    /// Executable mappings from the kernel's records (when /proc was too late).
    image: Arc<ImageMap>,
    regions: RegionMirror,
    /// The scope generation the regions belong to (0: not known yet).
    generation: u32,
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
    unwind_tables: Option<UnwindTables>,
}

impl Correlator {
    pub fn new(table: RegionTable, options: Options, clock: Clock) -> Self {
        Self {
            processes: HashMap::new(),
            captured_paths: HashMap::new(),
            mount_points: HashMap::new(),
            text_offsets: TextOffsets::default(),
            symbolizer: StackSymbolizer::new(),
            rendered_stacks: RenderedStacks::default(),
            table,
            filter: options.filter,
            aggregator: (!options.every_event).then(|| Aggregator::new(options.kernel_tallies)),
            max_stack_depth: options.max_stack_depth,
            clock,
            counters: AgentCounters::default(),
            forks_waiting: HashMap::new(),
            unwind_tables: options.unwind_tables,
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
            .map(|t| t.counters)
            .unwrap_or_default();
        AgentCounters {
            region_blocks_not_inserted: self.table.blocks_not_inserted,
            unwind_table_full: unwind.full,
            unwind_info_missing: unwind.unbuilt,
            unwind_tables_built: unwind.built,
            kernel_table_edits_failed: self.table.edits_failed
                + unwind.removals_failed
                + self
                    .aggregator
                    .as_ref()
                    .map_or(0, Aggregator::tally_removals_failed),
            ..self.counters
        }
    }

    /// Builds the unwind table of an executable file region's file, if it has none
    /// (read through the mapping's own /proc entry: the file the process mapped, even
    /// in another mount namespace).
    fn unwind_table_for(&mut self, pid: u32, region: &Region, path: Option<&str>) {
        if region.prot & PROT_EXEC == 0 || region.file.inode == 0 {
            return;
        }
        let Some(tables) = &mut self.unwind_tables else {
            return;
        };
        if tables.known(&region.file) {
            return;
        }
        let map_file = format!("/proc/{pid}/map_files/{:x}-{:x}", region.start, region.end);
        let added = tables.ensure(region.file, || {
            std::fs::File::open(&map_file)
                .ok()
                .or_else(|| path.and_then(|p| std::fs::File::open(p).ok()))
        });
        if added {
            self.table.tables_changed();
        }
    }

    /// Frees the unwind tables of files no tracked mapping uses any more.
    fn collect_unwind_tables(&mut self) {
        let Some(tables) = &mut self.unwind_tables else {
            return;
        };
        let used = self
            .processes
            .values()
            .flat_map(|state| state.regions.iter())
            .filter(|t| t.region.prot & PROT_EXEC != 0)
            .map(|t| t.region.file)
            .collect();
        if tables.collect(&used) {
            self.table.tables_changed();
        }
    }

    /// The events for one item (several when an exit or an unmap closes regions).
    pub fn handle(&mut self, item: Item, out: &mut Vec<Timed>) {
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
                    Record::MappedFile(_) | Record::WriteFault(_) | Record::KernelWriteFault(_)
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
                    Record::KernelWriteFault(k) => {
                        let depth = stack_depth(k.kernel_stack_bytes, k.kernel_stack.len());
                        out.extend(self.write_fault(&k.fault, Some(&k.kernel_stack[..depth])));
                    }
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
                }
            }
        }
    }

    fn process_info(&mut self, header: &RecordHeader) -> ProcessInfo {
        let state = self.processes.entry(header.tgid).or_default();
        ProcessInfo {
            pid: header.tgid,
            tid: header.tid,
            comm: kernel_string(&header.comm),
            exe: state.maps.exe.clone(),
        }
    }

    /// Keeps the kernel's capture of a file's path for the `region_mapped` that follows.
    fn mapped_file(&mut self, record: &MappedFileRecord) {
        self.counters.file_records_delivered += 1;
        let mount_point = self.mount_points.get(&record.mount_id).map(|p| &**p);
        let Some(captured) = captured_path(record, mount_point) else {
            return;
        };
        if captured.cut {
            self.counters.paths_truncated += 1;
        }
        self.captured_paths
            .insert(record.region_id, captured.path.into());
    }

    fn region_mapped(&mut self, record: &RegionRecord, out: &mut Vec<Timed>) {
        let region = record.region;
        let captured = self.captured_paths.remove(&region.id);
        let process = self.process_info(&record.header);
        let state = self.processes.entry(process.pid).or_default();
        state.generation = region.generation;
        let grown = state
            .regions
            .find(region.start)
            .filter(|tracked| tracked.region.id == region.id)
            .map(|tracked| tracked.path.clone());
        let path = match grown {
            // The heap grown in place keeps what it had.
            Some(path) => path,
            None if is_file_backed(&region) => {
                captured.or_else(|| state.maps.path_at(region.start).map(Arc::from))
            }
            None => None,
        };
        self.unwind_table_for(process.pid, &region, path.as_deref());
        let state = self.processes.entry(process.pid).or_default();
        if region.prot & PROT_EXEC != 0
            && let Some(path) = &path
        {
            let entry = MapEntry {
                start: region.start,
                end: region.end,
                offset: region.file_offset,
                path: Some(PathBuf::from(&**path)),
                executable: true,
            };
            Arc::make_mut(&mut state.image).insert(entry);
        }
        let mut reported = region;
        if region.path_filter == PATH_PENDING {
            // The kernel sends this region's faults to us until it has the verdict.
            reported.path_filter = self.filter.path_state(path.as_deref());
            self.table.set_path_verdict(region.id, reported.path_filter);
        }
        let replaced = state.regions.insert(TrackedRegion {
            region: reported,
            path: path.clone(),
        });
        // What the copy held there was unmapped by a change the kernel could not see
        // (another thread's call that has not reached its exit yet): it is gone.
        for old in replaced {
            let cut = (
                old.region.start.max(region.start),
                old.region.end.min(region.end),
            );
            self.region_removed(&record.header, old, cut, out);
        }
        if !self.reportable(&reported, path.as_deref()) {
            return;
        }
        if path.is_none() && is_file_backed(&region) {
            self.counters.paths_unresolved += 1;
        }
        let origin = match record.detail {
            ORIGIN_MREMAP => "mremap",
            ORIGIN_BRK => "brk",
            ORIGIN_EXEC => "exec",
            _ => "mmap",
        };
        out.push(region_event(
            Some(record.header.ts_ns),
            RegionKind::Mapped(origin),
            process,
            &reported,
            path,
            None,
            None,
        ));
    }

    /// No piece of region `id` is left: its writes are reported (before its
    /// `region_unmapped`) and its kernel tallies and `--path` verdict go. A region that
    /// keeps pieces keeps counting: its aggregates go on until the flush interval.
    fn region_gone(&mut self, pid: u32, id: u64, out: &mut Vec<Timed>) {
        self.flush(|a| a.take_region(pid, id), out);
        self.table.forget_path_verdict(id);
    }

    /// `[cut)` of `old` went without a record of its own: its writes are reported,
    /// its blocks leave the kernel's table, and a `region_unmapped` says so.
    fn region_removed(
        &mut self,
        header: &RecordHeader,
        old: TrackedRegion,
        cut: (u64, u64),
        out: &mut Vec<Timed>,
    ) {
        let pid = header.tgid;
        let state = self.processes.entry(pid).or_default();
        if !state.regions.contains_id(old.region.id) {
            self.region_gone(pid, old.region.id, out);
        }
        let pieces = split(&old.region, cut.0, cut.1, UNMAP);
        self.table
            .replace_with_pieces(pid, &old.region, pieces.pieces());
        let process = self.process_info(header);
        if let Some(event) = self.change_event(
            Some(header.ts_ns),
            process,
            &old.region,
            old.path,
            cut,
            UNMAP,
        ) {
            out.push(event);
        }
    }

    /// The kernel unmapped (`new_prot` `UNMAP`) or mprotected part or all of a region.
    fn region_changed(&mut self, record: &RegionRecord, new_prot: u32, out: &mut Vec<Timed>) {
        let region = record.region;
        let cut = (record.range_start, record.range_end);
        let process = self.process_info(&record.header);
        let state = self.processes.entry(process.pid).or_default();
        let path = state.regions.apply(&region, cut.0, cut.1, new_prot);
        if new_prot == UNMAP && !state.regions.contains_id(region.id) {
            self.region_gone(process.pid, region.id, out);
        }
        if let Some(event) = self.change_event(
            Some(record.header.ts_ns),
            process,
            &region,
            path,
            cut,
            new_prot,
        ) {
            out.push(event);
        }
    }

    /// The kernel's walk skipped gaps in a range (or stepped over a region newer than
    /// the call): finish the change from the copy, on the regions older than the call.
    fn range_unresolved(&mut self, record: &RegionRecord, new_prot: u32, out: &mut Vec<Timed>) {
        let (start, end) = (record.range_start, record.range_end);
        let tgid = record.header.tgid;
        let process = self.process_info(&record.header);
        let state = self.processes.entry(tgid).or_default();
        let (missed, newer): (Vec<_>, Vec<_>) = state
            .regions
            .take_overlapping(start, end)
            .into_iter()
            .partition(|t| change_applies(&t.region, record.seq) && changes(&t.region, new_prot));
        for tracked in newer {
            state.regions.insert(tracked);
        }
        for tracked in &missed {
            for piece in split(&tracked.region, start, end, new_prot).pieces() {
                state.regions.insert(TrackedRegion {
                    region: tracked.region.piece(piece),
                    path: tracked.path.clone(),
                });
            }
        }
        for tracked in missed {
            let region = tracked.region;
            let split = split(&region, start, end, new_prot);
            if new_prot == UNMAP
                && !self
                    .processes
                    .get(&tgid)
                    .is_some_and(|s| s.regions.contains_id(region.id))
            {
                self.region_gone(tgid, region.id, out);
            }
            self.table
                .replace_with_pieces(tgid, &region, split.pieces());
            if let Some(event) = self.change_event(
                Some(record.header.ts_ns),
                process.clone(),
                &region,
                tracked.path,
                (split.cut_start, split.cut_end),
                new_prot,
            ) {
                out.push(event);
            }
        }
    }

    /// An mremap from a range the kernel's table did not hold: the region the copy
    /// holds there moves (a new id at the new place, like the kernel's own moves).
    fn remap_unresolved(&mut self, record: &RegionRecord, out: &mut Vec<Timed>) {
        let tgid = record.header.tgid;
        let (old_start, old_end) = (record.range_start, record.range_end);
        let state = self.processes.entry(tgid).or_default();
        let old = state
            .regions
            .find(old_start)
            .filter(|t| change_applies(&t.region, record.seq))
            .cloned();
        if let Some(old) = &old {
            let moved = Region {
                start: record.region.start,
                end: record.region.end,
                file_offset: old.region.file_offset + (old_start - old.region.start),
                id: self.table.new_region_id(),
                generation: state.generation,
                ..old.region
            };
            self.table.insert_if_absent(tgid, &moved);
            let mapped = RegionRecord {
                header: record.header,
                region: moved,
                range_start: moved.start,
                range_end: moved.end,
                detail: ORIGIN_MREMAP,
                ..*record
            };
            self.captured_paths.extend(
                old.path
                    .clone()
                    .filter(|_| is_file_backed(&moved))
                    .map(|p| (moved.id, p)),
            );
            self.region_mapped(&mapped, out);
        }
        if record.detail & MREMAP_DONTUNMAP == 0 {
            let unmap = RegionRecord {
                range_start: old_start,
                range_end: old_end,
                ..*record
            };
            self.range_unresolved(&unmap, UNMAP, out);
        }
    }

    /// The program an exec loaded: its text, for symbols.
    fn exec_image(&mut self, record: &RegionRecord) {
        let Some(path) = self.captured_paths.remove(&record.region.id) else {
            return;
        };
        if let Some(entry) =
            self.text_offsets
                .image_entry(&path, record.range_start, record.range_end)
        {
            let state = self.processes.entry(record.header.tgid).or_default();
            Arc::make_mut(&mut state.image).insert(entry);
        }
    }

    /// A new process: it gets a copy of its parent's regions (the kernel lets its faults
    /// fall back to the parent's until this copy is in place).
    fn process_fork(&mut self, record: &ProcessRecord, out: &mut Vec<Timed>) {
        let child = record.tgid;
        let parent = self.processes.entry(record.header.tgid).or_default();
        let maps = parent.maps.clone();
        let image = parent.image.clone();
        let inherited: Vec<TrackedRegion> = parent.regions.iter().cloned().collect();
        let process = ProcessInfo {
            pid: child,
            tid: child,
            comm: kernel_string(&record.header.comm),
            exe: maps.exe.clone(),
        };
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
                    RegionKind::Mapped("fork"),
                    process.clone(),
                    &region,
                    tracked.path,
                    None,
                    None,
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
            },
        );
    }

    /// The process exec'd or exited: its regions leave the kernel table.
    fn process_gone(&mut self, record: &ProcessRecord, out: &mut Vec<Timed>) {
        self.flush(|a| a.take_process(record.tgid), out);
        let Some(state) = self.processes.get_mut(&record.tgid) else {
            return;
        };
        let regions = std::mem::take(&mut state.regions);
        state.image = Arc::default();
        let process = ProcessInfo {
            pid: record.tgid,
            tid: record.header.tid,
            comm: kernel_string(&record.header.comm),
            exe: state.maps.exe.clone(),
        };
        for tracked in regions.into_regions() {
            let region = tracked.region;
            self.table.remove(record.tgid, &region);
            self.table.forget_path_verdict(region.id);
            if self.reportable(&region, tracked.path.as_deref()) {
                self.counters.regions_closed_by_agent += 1;
                out.push(region_event(
                    Some(record.header.ts_ns),
                    RegionKind::Unmapped,
                    process.clone(),
                    &region,
                    tracked.path,
                    Some((region.start, region.end)),
                    None,
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
    fn adopt_orphaned_forks(&mut self, out: &mut Vec<Timed>) {
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
    fn seed(
        &mut self,
        pid: u32,
        comm: &str,
        generation: u32,
        regions: Vec<TrackedRegion>,
        out: &mut Vec<Timed>,
    ) {
        let state = self.processes.entry(pid).or_default();
        state.generation = generation;
        let process = ProcessInfo {
            pid,
            tid: pid,
            comm: comm.to_string(),
            exe: state.maps.exe.clone(),
        };
        for tracked in regions {
            self.unwind_table_for(pid, &tracked.region, tracked.path.as_deref());
            if tracked.region.path_filter != PATH_PENDING {
                self.table
                    .set_path_verdict(tracked.region.id, tracked.region.path_filter);
            }
            if self.reportable(&tracked.region, tracked.path.as_deref()) {
                out.push(region_event(
                    None,
                    RegionKind::Mapped("proc"),
                    process.clone(),
                    &tracked.region,
                    tracked.path.clone(),
                    None,
                    None,
                ));
            }
            self.processes
                .entry(pid)
                .or_default()
                .regions
                .insert(tracked);
        }
    }

    /// Region events are for regions that are (or become) writable and pass the filters.
    fn reportable(&self, region: &Region, path: Option<&str>) -> bool {
        region.is_writable() && self.filter.audited(region, path)
    }

    /// `region_unmapped` or `region_protected` for a change of `cut`, when the region
    /// was or becomes reportable (read-only mappings are tracked but not reported).
    fn change_event(
        &self,
        ts_ns: Option<u64>,
        process: ProcessInfo,
        region: &Region,
        path: Option<Arc<str>>,
        cut: (u64, u64),
        new_prot: u32,
    ) -> Option<Timed> {
        if !changes(region, new_prot) {
            return None;
        }
        let new_prot = (new_prot != UNMAP).then_some(new_prot);
        let kind = if new_prot.is_some() {
            RegionKind::Protected
        } else {
            RegionKind::Unmapped
        };
        let after = new_prot.map(|prot| Region { prot, ..*region });
        let reportable = self.reportable(region, path.as_deref())
            || after.is_some_and(|after| self.reportable(&after, path.as_deref()));
        reportable.then(|| region_event(ts_ns, kind, process, region, path, Some(cut), new_prot))
    }

    /// A write fault; `kernel_stack` is set when the kernel did the write. Reported at
    /// once in every-event mode, otherwise merged into its aggregate.
    fn write_fault(&mut self, record: &FaultRecord, kernel_stack: Option<&[u64]>) -> Option<Timed> {
        let process = self.process_info(&record.header);
        let state = self.processes.entry(process.pid).or_default();
        let mut region = record.region;
        let own = state
            .regions
            .find(record.address)
            .filter(|tracked| {
                // A fault matched through the parent's regions (right after a fork)
                // belongs to the child's copy of that region.
                tracked.region.id == region.id || record.flags & FAULT_VIA_PARENT != 0
            })
            .cloned();
        let path = own.as_ref().and_then(|tracked| tracked.path.clone());
        if let Some(own) = own {
            region = Region {
                path_filter: region.path_filter,
                ..own.region
            };
        }
        let maps = state.maps.clone();
        let image = state.image.clone();
        // Faults of a region still awaiting its `--path` verdict come to us.
        if region.path_filter == PATH_PENDING && !self.filter.audited(&region, path.as_deref()) {
            self.counters.faults_filtered_by_agent += 1;
            return None;
        }
        let depth = stack_depth(record.stack_bytes, record.stack.len());
        let fault = RawFault {
            process,
            maps,
            image,
            address: record.address,
            error_code: record.error_code,
            region,
            path,
            user_stack: record.stack[..depth].to_vec(),
            user_stack_truncated: record.flags & FAULT_STACK_TRUNCATED != 0,
            stack_end: record.stack_end,
            kernel_stack: kernel_stack.map(<[u64]>::to_vec),
            ts_ns: record.header.ts_ns,
            stack_hash: record.stack_hash,
            epoch: u64::from(record.epoch),
        };
        match &mut self.aggregator {
            Some(aggregator) => {
                aggregator.add(fault);
                None
            }
            None => Some(self.fault_event(fault, None)),
        }
    }

    /// Starts the next flush interval; returns the one that closes, whose aggregates
    /// are reported once its records are in (`None`: nothing to wait for).
    pub fn start_flush(&mut self) -> Option<u64> {
        self.aggregator.as_mut()?.start_interval()
    }

    /// Reports the aggregates `take` removes from the aggregator (none in every-event
    /// mode): before a region or process ends, and at each flush.
    pub fn flush(
        &mut self,
        take: impl FnOnce(&mut Aggregator) -> Vec<Aggregate>,
        out: &mut Vec<Timed>,
    ) {
        let Some(aggregator) = &mut self.aggregator else {
            return;
        };
        for aggregate in take(aggregator) {
            let summary = AggregateSummary {
                count: aggregate.count,
                pages: aggregate.pages(),
                first_ts: self.clock.format_monotonic(aggregate.first.ts_ns),
                last_ts: self.clock.format_monotonic(aggregate.last_ts_ns),
            };
            let mut event = self.fault_event(aggregate.first, Some(summary));
            event.ts_ns = Some(aggregate.last_ts_ns);
            out.push(event);
        }
    }

    /// The `write_fault` event for `fault` (standing for `summary.count` faults when
    /// aggregated): the only place stacks are symbolised.
    fn fault_event(&mut self, fault: RawFault, summary: Option<AggregateSummary>) -> Timed {
        let symbolizer = &self.symbolizer;
        let stack = self.rendered_stacks.get(
            &fault.maps,
            &fault.image,
            &fault.user_stack,
            self.max_stack_depth,
            || {
                let stack = symbolizer.symbolize(&fault.maps, &fault.image, &fault.user_stack);
                (stack.frames, stack.unknown_frames)
            },
        );
        self.counters.frames_unsymbolized += stack.unknown_frames;
        let stack_truncated = fault.user_stack_truncated || stack.cut;
        if stack.cut {
            self.counters.stacks_cut_for_output += 1;
        }
        let kernel_stack = fault.kernel_stack.as_deref().map(|addrs| {
            let mut stack = self.symbolizer.symbolize_kernel(addrs);
            self.counters.frames_unsymbolized += stack.unknown_frames;
            if stack.frames.len() > self.max_stack_depth {
                stack.frames.truncate(self.max_stack_depth);
                self.counters.stacks_cut_for_output += 1;
            }
            stack.frames
        });
        self.counters.faults_delivered += summary.as_ref().map_or(1, |s| s.count);
        self.counters.write_fault_events += 1;
        Timed {
            ts_ns: Some(fault.ts_ns),
            body: Body::WriteFault(WriteFault {
                process: fault.process,
                address: addresses::in_region(fault.address, fault.region.start),
                region: region_json(&fault.region, fault.path.as_deref()),
                access: if kernel_stack.is_some() {
                    "kernel"
                } else {
                    "user"
                },
                error_code: (fault.error_code != ERROR_CODE_UNKNOWN).then_some(fault.error_code),
                stack: stack.json.clone(),
                stack_truncated,
                stack_end: stack_end_name(fault.stack_end),
                kernel_stack,
                aggregate: summary,
            }),
        }
    }
}

fn region_event(
    ts_ns: Option<u64>,
    kind: RegionKind,
    process: ProcessInfo,
    region: &Region,
    path: Option<Arc<str>>,
    cut: Option<(u64, u64)>,
    new_prot: Option<u32>,
) -> Timed {
    Timed {
        ts_ns,
        body: Body::Region(RegionEvent::new(
            kind,
            process,
            region_json(region, path.as_deref()),
            cut.map(|(start, end)| Range {
                start: addresses::in_region(start, region.start),
                end: addresses::in_region(end, region.start),
            }),
            new_prot,
        )),
    }
}

/// The schema's name of a `STACK_END_*`.
fn stack_end_name(end: u32) -> &'static str {
    use map_audit_common::unwind::*;
    match end {
        STACK_END_COMPLETE => "complete",
        STACK_END_DEPTH_LIMIT => "depth_limit",
        STACK_END_UNREADABLE => "unreadable_stack",
        STACK_END_ANONYMOUS_CODE => "jit_or_anonymous_code",
        _ => "no_unwind_info",
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
