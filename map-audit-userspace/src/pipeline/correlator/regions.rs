//! Region records: the copy of each process's regions, their paths, the changes the
//! kernel handed over, and the region events.

use super::*;

impl Correlator {
    /// Keeps the kernel's capture of a file's path for the `region_mapped` that follows.
    pub(super) fn mapped_file(&mut self, record: &MappedFileRecord) {
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

    pub(super) fn region_mapped(&mut self, record: &RegionRecord, out: &mut Vec<Timed>) {
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
                file: None,
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
            ORIGIN_MREMAP => Origin::Mremap,
            ORIGIN_BRK => Origin::Brk,
            ORIGIN_EXEC => Origin::Exec,
            _ => Origin::Mmap,
        };
        out.push(region_event(
            Some(record.header.ts_ns),
            RegionChange::Mapped(origin),
            process,
            &reported,
            path,
        ));
    }

    /// No piece of region `id` is left: its writes are reported (before its
    /// `region_unmapped`) and its kernel tallies and `--path` verdict go. A region that
    /// keeps pieces keeps counting: its aggregates go on until the flush interval.
    pub(super) fn region_gone(&mut self, pid: u32, id: u64, out: &mut Vec<Timed>) {
        self.flush(|a| a.take_region(pid, id), out);
        self.table.forget_path_verdict(id);
    }

    /// `[cut)` of `old` went without a record of its own: its writes are reported,
    /// its blocks leave the kernel's table, and a `region_unmapped` says so.
    pub(super) fn region_removed(
        &mut self,
        header: &RecordHeader,
        old: TrackedRegion,
        cut: (u64, u64),
        out: &mut Vec<Timed>,
    ) {
        let pid = header.tgid;
        self.pages_gone(pid, old.region.id, cut, UnsyncedReason::Unmapped, out);
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
    pub(super) fn region_changed(
        &mut self,
        record: &RegionRecord,
        new_prot: u32,
        out: &mut Vec<Timed>,
    ) {
        let region = record.region;
        let cut = (record.range_start, record.range_end);
        let process = self.process_info(&record.header);
        let state = self.processes.entry(process.pid).or_default();
        let path = state.regions.apply(&region, cut.0, cut.1, new_prot);
        let gone = !state.regions.contains_id(region.id);
        if new_prot == UNMAP {
            self.pages_gone(process.pid, region.id, cut, UnsyncedReason::Unmapped, out);
            if gone {
                self.region_gone(process.pid, region.id, out);
            }
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
    pub(super) fn range_unresolved(
        &mut self,
        record: &RegionRecord,
        new_prot: u32,
        out: &mut Vec<Timed>,
    ) {
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
            if new_prot == UNMAP {
                self.pages_gone(tgid, region.id, (start, end), UnsyncedReason::Unmapped, out);
            }
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
    pub(super) fn remap_unresolved(&mut self, record: &RegionRecord, out: &mut Vec<Timed>) {
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
    pub(super) fn exec_image(&mut self, record: &RegionRecord) {
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

    /// Region events are for regions that are (or become) writable and pass the filters.
    pub(super) fn reportable(&self, region: &Region, path: Option<&str>) -> bool {
        region.is_writable() && self.filter.audited(region, path)
    }

    /// `region_unmapped` or `region_protected` for a change of `cut`, when the region
    /// was or becomes reportable (read-only mappings are tracked but not reported).
    pub(super) fn change_event(
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
        let after = new_prot.map(|prot| Region { prot, ..*region });
        let reportable = self.reportable(region, path.as_deref())
            || after.is_some_and(|after| self.reportable(&after, path.as_deref()));
        let range = range_in(region, cut);
        let change = match new_prot {
            Some(prot) => RegionChange::Protected(range, prot),
            None => RegionChange::Unmapped(range),
        };
        reportable.then(|| region_event(ts_ns, change, process, region, path))
    }
}
