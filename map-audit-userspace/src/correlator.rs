//! Turns kernel records into events: keeps a mirror of each process's tracked regions
//! (with the file paths the kernel cannot give), attaches process details, symbolises
//! stacks, and cleans the kernel's region table when a process exits.

use std::collections::{BTreeMap, HashMap};

use aya::maps::{MapData, lpm_trie::{Key, LpmTrie}};
use map_audit_common::{
    blocks::block_order,
    records::{FaultRecord, RecordHeader, RegionRecord},
    region::{Region, RegionKeyData, block_prefix_len, region_key_data},
};
use procfs::process::MMapPath;

use crate::{
    events::{Body, ProcessInfo, Range, RegionEvent, WriteFault, hex},
    records::Record,
    region_names::{is_file_backed, region_json},
    stats::AgentCounters,
    symbolizer::StackSymbolizer,
};

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
    exe: Option<String>,
    /// Tracked regions by start address.
    regions: BTreeMap<u64, TrackedRegion>,
}

/// The kernel's region table, as the agent holds it.
pub type RegionTable = LpmTrie<MapData, RegionKeyData, Region>;

pub struct Correlator {
    processes: HashMap<u32, ProcessState>,
    symbolizer: StackSymbolizer,
    region_table: RegionTable,
    pub counters: AgentCounters,
}

impl Correlator {
    pub fn new(region_table: RegionTable) -> Self {
        Self {
            processes: HashMap::new(),
            symbolizer: StackSymbolizer::new(),
            region_table,
            counters: AgentCounters::default(),
        }
    }

    /// The events for one record (several when an exit closes regions).
    pub fn handle(&mut self, record: Record, out: &mut Vec<Timed>) {
        let pid = record.header().tgid;
        if !matches!(record, Record::ProcessExit(_)) {
            self.symbolizer.remember_process(pid);
        }
        match record {
            Record::RegionMapped(r) => out.push(self.region_mapped(&r)),
            Record::RegionUnmapped(r) => out.push(self.region_unmapped(&r)),
            Record::WriteFault(f) => out.push(self.write_fault(&f)),
            Record::ProcessExit(h) => self.process_exit(&h, out),
        }
    }

    fn process_info(&mut self, header: &RecordHeader) -> ProcessInfo {
        let state = self.processes.entry(header.tgid).or_insert_with(|| ProcessState {
            exe: std::fs::read_link(format!("/proc/{}/exe", header.tgid))
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            ..Default::default()
        });
        ProcessInfo {
            pid: header.tgid,
            tid: header.tid,
            comm: comm_string(&header.comm),
            exe: state.exe.clone(),
        }
    }

    fn region_mapped(&mut self, record: &RegionRecord) -> Timed {
        let process = self.process_info(&record.header);
        let region = record.region;
        let path = if is_file_backed(&region) {
            let path = mapped_path(process.pid, region.start);
            if path.is_none() {
                self.counters.paths_unresolved += 1;
            }
            path
        } else {
            None
        };
        let state = self.processes.entry(process.pid).or_default();
        state.regions.insert(region.start, TrackedRegion { region, path: path.clone() });
        self.counters.region_events_delivered += 1;
        Timed {
            ts_ns: record.header.ts_ns,
            body: Body::Region(RegionEvent { process, region: region_json(&region, path), range: None }),
        }
    }

    fn region_unmapped(&mut self, record: &RegionRecord) -> Timed {
        let process = self.process_info(&record.header);
        let region = record.region;
        let (cut_start, cut_end) = (record.range_start, record.range_end);
        let state = self.processes.entry(process.pid).or_default();
        let path = match state.regions.remove(&region.start) {
            Some(tracked) if tracked.region.id == region.id => tracked.path,
            Some(other) => {
                state.regions.insert(region.start, other);
                None
            }
            None => None,
        };
        // Pieces the kernel kept (a partial unmap trims the region).
        if region.start < cut_start {
            let head = Region { end: cut_start, ..region };
            state.regions.insert(head.start, TrackedRegion { region: head, path: path.clone() });
        }
        if cut_end < region.end {
            let tail = Region { start: cut_end, file_offset: region.file_offset + (cut_end - region.start), ..region };
            state.regions.insert(tail.start, TrackedRegion { region: tail, path: path.clone() });
        }
        self.counters.region_events_delivered += 1;
        Timed {
            ts_ns: record.header.ts_ns,
            body: Body::Region(RegionEvent {
                process,
                region: region_json(&region, path),
                range: Some(Range { start: hex(cut_start), end: hex(cut_end) }),
            }),
        }
    }

    fn write_fault(&mut self, record: &FaultRecord) -> Timed {
        let process = self.process_info(&record.header);
        let path = self.processes.get(&process.pid).and_then(|state| {
            let (_, tracked) = state.regions.range(..=record.address).next_back()?;
            (tracked.region.id == record.region.id && record.address < tracked.region.end)
                .then(|| tracked.path.clone())?
        });
        let depth = if record.stack_bytes > 0 { record.stack_bytes as usize / 8 } else { 0 };
        let addrs = &record.stack[..depth.min(record.stack.len())];
        let stack = self.symbolizer.symbolize(process.pid, addrs);
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
        self.symbolizer.forget_process(header.tgid);
        let Some(state) = self.processes.remove(&header.tgid) else {
            return;
        };
        let process = ProcessInfo {
            pid: header.tgid,
            tid: header.tid,
            comm: comm_string(&header.comm),
            exe: state.exe,
        };
        for tracked in state.regions.into_values() {
            self.remove_from_table(header.tgid, &tracked.region);
            self.counters.regions_closed_at_exit += 1;
            let region = tracked.region;
            out.push(Timed {
                ts_ns: header.ts_ns,
                body: Body::Region(RegionEvent {
                    process: process.clone(),
                    region: region_json(&region, tracked.path),
                    range: Some(Range { start: hex(region.start), end: hex(region.end) }),
                }),
            });
        }
    }

    /// Deletes the trie entries the kernel made for `region` (the same decomposition).
    fn remove_from_table(&mut self, tgid: u32, region: &Region) {
        let mut cursor = region.start;
        while cursor < region.end {
            let order = block_order(cursor, region.end);
            let key = Key::new(block_prefix_len(order), region_key_data(tgid, cursor));
            // Already gone is fine: the kernel may have removed it on munmap.
            let _ = self.region_table.remove(&key);
            cursor += 1 << order;
        }
    }
}

/// The path mapped at `start` in `pid`, from /proc/PID/maps.
fn mapped_path(pid: u32, start: u64) -> Option<String> {
    let maps = procfs::process::Process::new(pid as i32).ok()?.maps().ok()?;
    maps.into_iter()
        .find(|m| m.address.0 <= start && start < m.address.1)
        .and_then(|m| match m.pathname {
            MMapPath::Path(p) => Some(p.to_string_lossy().into_owned()),
            _ => None,
        })
}

/// A task's comm up to its NUL.
pub fn comm_string(comm: &[u8]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}
