//! Turns kernel records into events: keeps a copy of each process's tracked regions
//! (with the file paths the kernel cannot give), attaches process details, symbolises
//! stacks, and finishes the region-table changes the kernel hands over.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use map_audit_common::{
    records::{FaultRecord, MappedFileRecord, RecordHeader, RegionRecord},
    region::Region,
};

use crate::{
    events::{Body, ProcessInfo, Range, RegionEvent, WriteFault, hex},
    mount_points::{self, MountPoints},
    process_maps::ProcessMaps,
    records::Record,
    region_names::{is_file_backed, region_json},
    region_table::RegionTable,
    stats::AgentCounters,
    symbolizer::StackSymbolizer,
};

/// What the reader hands to the pipeline, in ring-buffer order.
pub enum Item {
    Record(Record),
    /// A fresh /proc/PID/maps snapshot, sent before the records that need it.
    Maps(u32, Arc<ProcessMaps>),
}

/// An event ready to be written, with the kernel time it happened at.
pub struct Timed {
    pub ts_ns: u64,
    pub body: Body,
}

struct TrackedRegion {
    region: Region,
    path: Option<String>,
}

#[derive(Default)]
struct ProcessState {
    maps: Arc<ProcessMaps>,
    /// Tracked regions by start address.
    regions: BTreeMap<u64, TrackedRegion>,
}

pub struct Correlator {
    processes: HashMap<u32, ProcessState>,
    /// Paths the kernel captured, by region id, until the region's `region_mapped`.
    captured_paths: HashMap<u64, String>,
    mounts: MountPoints,
    symbolizer: StackSymbolizer,
    table: RegionTable,
    pub counters: AgentCounters,
}

impl Correlator {
    pub fn new(table: RegionTable) -> Self {
        Self {
            processes: HashMap::new(),
            captured_paths: HashMap::new(),
            mounts: MountPoints::default(),
            symbolizer: StackSymbolizer::new(),
            table,
            counters: AgentCounters::default(),
        }
    }

    /// The events for one item (several when an exit or an unmap closes regions).
    pub fn handle(&mut self, item: Item, out: &mut Vec<Timed>) {
        match item {
            Item::Maps(pid, maps) => self.processes.entry(pid).or_default().maps = maps,
            Item::Record(Record::RegionMapped(r)) => out.push(self.region_mapped(&r)),
            Item::Record(Record::RegionUnmapped(r)) => out.push(self.region_unmapped(&r)),
            Item::Record(Record::UnmapUnresolved(r)) => self.unmap_unresolved(&r, out),
            Item::Record(Record::WriteFault(f)) => out.push(self.write_fault(&f)),
            Item::Record(Record::MappedFile(f)) => self.mapped_file(&f),
            Item::Record(Record::ProcessExit(h)) => self.process_exit(&h, out),
        }
    }

    fn process(&mut self, header: &RecordHeader) -> (ProcessInfo, &mut ProcessState) {
        let state = self.processes.entry(header.tgid).or_default();
        let info = ProcessInfo {
            pid: header.tgid,
            tid: header.tid,
            comm: comm_string(&header.comm),
            exe: state.maps.exe.clone(),
        };
        (info, state)
    }

    /// Keeps the kernel's capture of a file's path for the `region_mapped` that follows.
    fn mapped_file(&mut self, record: &MappedFileRecord) {
        self.counters.file_records_delivered += 1;
        let depth = (record.depth as usize).min(record.names.len());
        if depth == 0 {
            return;
        }
        let names: Vec<String> = record.names[..depth]
            .iter()
            .map(|n| comm_string(n))
            .collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut path = mount_points::join(self.mounts.get(record.mount_id), &names);
        if record.truncated != 0 {
            self.counters.paths_truncated += 1;
            path.insert_str(0, "...");
        }
        self.captured_paths.insert(record.region_id, path);
    }

    fn region_mapped(&mut self, record: &RegionRecord) -> Timed {
        let region = record.region;
        let captured = self.captured_paths.remove(&region.id);
        let (process, state) = self.process(&record.header);
        let path = if is_file_backed(&region) {
            captured.or_else(|| state.maps.path_at(region.start))
        } else {
            None
        };
        state.regions.insert(
            region.start,
            TrackedRegion {
                region,
                path: path.clone(),
            },
        );
        if path.is_none() && is_file_backed(&region) {
            self.counters.paths_unresolved += 1;
        }
        self.counters.region_events_delivered += 1;
        region_event(record.header.ts_ns, process, &region, path, None)
    }

    fn region_unmapped(&mut self, record: &RegionRecord) -> Timed {
        let region = record.region;
        let (cut_start, cut_end) = (record.range_start, record.range_end);
        let (process, state) = self.process(&record.header);
        let path = match state.regions.remove(&region.start) {
            Some(tracked) if tracked.region.id == region.id => tracked.path,
            Some(other) => {
                state.regions.insert(region.start, other);
                None
            }
            None => None,
        };
        for piece in pieces_outside(&region, cut_start, cut_end) {
            state.regions.insert(
                piece.start,
                TrackedRegion {
                    region: piece,
                    path: path.clone(),
                },
            );
        }
        self.counters.region_events_delivered += 1;
        region_event(
            record.header.ts_ns,
            process,
            &region,
            path,
            Some((cut_start, cut_end)),
        )
    }

    /// The kernel's unmap walk skipped gaps in `[start, end)`: remove what it missed.
    fn unmap_unresolved(&mut self, record: &RegionRecord, out: &mut Vec<Timed>) {
        self.counters.region_events_delivered += 1;
        let (start, end) = (record.range_start, record.range_end);
        let tgid = record.header.tgid;
        let (process, state) = self.process(&record.header);
        let overlapping: Vec<u64> = state
            .regions
            .range(..end)
            .filter(|(_, t)| t.region.end > start)
            .map(|(&s, _)| s)
            .collect();
        let mut missed = Vec::new();
        for key in overlapping {
            let tracked = state.regions.remove(&key).expect("key taken from the map");
            for piece in pieces_outside(&tracked.region, start, end) {
                state.regions.insert(
                    piece.start,
                    TrackedRegion {
                        region: piece,
                        path: tracked.path.clone(),
                    },
                );
            }
            missed.push(tracked);
        }
        for tracked in missed {
            let region = tracked.region;
            self.table.remove(tgid, &region);
            for piece in pieces_outside(&region, start, end) {
                self.table.insert(tgid, &piece);
            }
            let cut = (region.start.max(start), region.end.min(end));
            out.push(region_event(
                record.header.ts_ns,
                process.clone(),
                &region,
                tracked.path,
                Some(cut),
            ));
        }
    }

    fn write_fault(&mut self, record: &FaultRecord) -> Timed {
        let (process, state) = self.process(&record.header);
        let path = state
            .regions
            .range(..=record.address)
            .next_back()
            .and_then(|(_, tracked)| {
                (tracked.region.id == record.region.id && record.address < tracked.region.end)
                    .then(|| tracked.path.clone())?
            });
        let maps = state.maps.clone();
        let depth = if record.stack_bytes > 0 {
            record.stack_bytes as usize / 8
        } else {
            0
        };
        let addrs = &record.stack[..depth.min(record.stack.len())];
        let stack = self.symbolizer.symbolize(&maps, addrs);
        self.counters.frames_unsymbolized += stack.unknown_frames;
        self.counters.faults_delivered += 1;
        Timed {
            ts_ns: record.header.ts_ns,
            body: Body::WriteFault(WriteFault {
                process,
                address: hex(record.address),
                region: region_json(&record.region, path),
                access: "user",
                error_code: record.error_code,
                stack: stack.frames,
                stack_truncated: depth == record.stack.len(),
            }),
        }
    }

    /// The process is gone: its regions leave the kernel table and are reported closed.
    fn process_exit(&mut self, header: &RecordHeader, out: &mut Vec<Timed>) {
        let Some(state) = self.processes.remove(&header.tgid) else {
            return;
        };
        let process = ProcessInfo {
            pid: header.tgid,
            tid: header.tid,
            comm: comm_string(&header.comm),
            exe: state.maps.exe.clone(),
        };
        for tracked in state.regions.into_values() {
            let region = tracked.region;
            self.table.remove(header.tgid, &region);
            self.counters.regions_closed_at_exit += 1;
            out.push(region_event(
                header.ts_ns,
                process.clone(),
                &region,
                tracked.path,
                Some((region.start, region.end)),
            ));
        }
    }
}

/// `region_mapped` (no cut) or `region_unmapped` (the cut range).
fn region_event(
    ts_ns: u64,
    process: ProcessInfo,
    region: &Region,
    path: Option<String>,
    cut: Option<(u64, u64)>,
) -> Timed {
    Timed {
        ts_ns,
        body: Body::Region(RegionEvent {
            process,
            region: region_json(region, path),
            range: cut.map(|(start, end)| Range {
                start: hex(start),
                end: hex(end),
            }),
        }),
    }
}

/// What is left of `region` after cutting out `[start, end)`: up to two pieces.
fn pieces_outside(region: &Region, start: u64, end: u64) -> impl Iterator<Item = Region> {
    let head = (region.start < start).then(|| Region {
        end: start.min(region.end),
        ..*region
    });
    let tail = (end < region.end).then(|| Region {
        start: end.max(region.start),
        file_offset: region.file_offset + (end.max(region.start) - region.start),
        ..*region
    });
    head.into_iter().chain(tail)
}

/// A NUL-terminated kernel string (a comm, a dentry name) as text.
pub fn comm_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: u64, end: u64) -> Region {
        Region {
            start,
            end,
            file_offset: 0x1000,
            id: 7,
            prot: 3,
            flags: 0x22,
        }
    }

    #[test]
    fn pieces_outside_a_cut() {
        let r = region(0x10000, 0x20000);
        let pieces: Vec<_> = pieces_outside(&r, 0x14000, 0x18000).collect();
        assert_eq!(
            pieces,
            [
                Region { end: 0x14000, ..r },
                Region {
                    start: 0x18000,
                    file_offset: 0x9000,
                    ..r
                },
            ]
        );
        assert_eq!(pieces_outside(&r, 0x10000, 0x20000).count(), 0);
        assert_eq!(
            pieces_outside(&r, 0x0, 0x18000).collect::<Vec<_>>(),
            [Region {
                start: 0x18000,
                file_offset: 0x9000,
                ..r
            }]
        );
    }
}
