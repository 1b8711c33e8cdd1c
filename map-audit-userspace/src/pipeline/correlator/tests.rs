//! The correlator on records made by hand, with the kernel's tables in memory
//! (`MemoryMaps`): no root, no kernel. Each test feeds what the kernel would send and
//! checks the events and the agent's edits of the tables.

use map_audit_common::{
    records::{
        FaultRecord, KIND_PROCESS_EXIT, KIND_PROCESS_FORK, KIND_REGION_MAPPED,
        KIND_REGION_PROTECTED, KIND_WRITE_FAULT, ProcessRecord, RecordHeader, RegionRecord,
    },
    region::{ForkFallback, MAP_ANONYMOUS, MAP_SHARED, PATH_MATCHED, ScopeEntry, key_owner},
};
use serde_json::Value;

use super::*;
use crate::kernel::table_maps::MemoryMaps;

/// A pid no test process has (above the default pid_max): nothing in /proc.
const PID: u32 = 4_200_001;
const CHILD: u32 = 4_200_002;

fn correlator(maps: MemoryMaps, every_event: bool) -> Correlator {
    Correlator::new(
        RegionTable::new(Box::new(maps)),
        Options::without_kernel(every_event),
        Clock::new(),
    )
}

fn header(kind: u32, tgid: u32) -> RecordHeader {
    let mut comm = [0; 16];
    comm[..4].copy_from_slice(b"test");
    RecordHeader {
        kind,
        tgid,
        tid: tgid,
        ts_ns: 1,
        comm,
        ..Default::default()
    }
}

fn region(id: u64, start: u64, end: u64) -> Region {
    Region {
        start,
        end,
        id,
        generation: 1,
        prot: 3,
        flags: MAP_SHARED | MAP_ANONYMOUS,
        path_filter: PATH_MATCHED,
        ..Default::default()
    }
}

fn mapped(tgid: u32, region: Region) -> Item {
    Item::Record(Record::RegionMapped(RegionRecord {
        header: header(KIND_REGION_MAPPED, tgid),
        region,
        range_start: region.start,
        range_end: region.end,
        ..Default::default()
    }))
}

fn fault(tgid: u32, region: Region, address: u64, stack: &[u64]) -> Item {
    let mut record = FaultRecord {
        header: header(KIND_WRITE_FAULT, tgid),
        address,
        error_code: 6,
        region,
        stack_hash: 0,
        stack_bytes: (stack.len() * 8) as i64,
        flags: 0,
        epoch: 0,
        stack_end: 0,
        _pad: 0,
        stack: [0; 64],
    };
    record.stack[..stack.len()].copy_from_slice(stack);
    Item::Record(Record::WriteFault(Box::new(record)))
}

fn process(kind: u32, parent: u32, tgid: u32, generation: u32) -> ProcessRecord {
    ProcessRecord {
        header: header(kind, parent),
        tgid,
        generation,
    }
}

/// Feeds `items` and returns the events as (name, JSON body).
fn run(correlator: &mut Correlator, items: Vec<Item>) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for item in items {
        correlator.handle(item, &mut out);
    }
    out.into_iter()
        .map(|timed| {
            (
                timed.body.name(),
                serde_json::to_value(&timed.body).unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_fault_is_reported_in_its_region_and_the_region_closes_at_exit() {
    let mut correlator = correlator(MemoryMaps::default(), true);
    let r = region(5, 0x10000, 0x20000);
    let exit = process(KIND_PROCESS_EXIT, PID, PID, 1);
    let events = run(
        &mut correlator,
        vec![
            mapped(PID, r),
            fault(PID, r, 0x12345, &[0x401000]),
            Item::Record(Record::ProcessExit(exit)),
        ],
    );
    let names: Vec<_> = events.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["region_mapped", "write_fault", "region_unmapped"]);
    assert_eq!(events[0].1["origin"], "mmap");
    assert_eq!(events[1].1["region"]["id"], 5);
    assert_eq!(events[1].1["address"], "0x12345");
    assert_eq!(events[2].1["range"]["end"], "0x20000");
    assert_eq!(correlator.agent_counters().regions_closed_by_agent, 1);
    assert_eq!(correlator.agent_counters().faults_delivered, 1);
}

#[test]
fn an_mprotect_in_the_middle_leaves_three_pieces_of_one_region() {
    let mut correlator = correlator(MemoryMaps::default(), true);
    let r = region(5, 0x10000, 0x20000);
    let protect = RegionRecord {
        header: header(KIND_REGION_PROTECTED, PID),
        region: r,
        range_start: 0x14000,
        range_end: 0x18000,
        detail: 1,
        ..Default::default()
    };
    let tail = Region {
        start: 0x18000,
        ..r
    };
    let events = run(
        &mut correlator,
        vec![
            mapped(PID, r),
            Item::Record(Record::RegionProtected(protect)),
            fault(PID, tail, 0x1c000, &[]),
        ],
    );
    assert_eq!(events[1].0, "region_protected");
    assert_eq!(events[1].1["new_prot"], "r--");
    assert_eq!(events[1].1["range"]["start"], "0x14000");
    // The fault in the last piece is reported in it: same id, the piece's bounds.
    assert_eq!(events[2].1["region"]["id"], 5);
    assert_eq!(events[2].1["region"]["start"], "0x18000");
}

#[test]
fn a_forked_child_gets_its_own_copy_in_the_kernel_table() {
    let child_generation = 9;
    let mut maps = MemoryMaps::default();
    maps.scope.insert(
        CHILD,
        ScopeEntry {
            generation: child_generation,
            ..Default::default()
        },
    );
    maps.fork_fallbacks.insert(
        CHILD,
        ForkFallback {
            parent_tgid: PID,
            parent_generation: 1,
            child_generation,
            ..Default::default()
        },
    );
    let mut correlator = correlator(maps, true);
    let r = region(5, 0x10000, 0x20000);
    let fork = process(KIND_PROCESS_FORK, PID, CHILD, child_generation);
    let events = run(
        &mut correlator,
        vec![mapped(PID, r), Item::Record(Record::ProcessFork(fork))],
    );
    assert_eq!(events[1].0, "region_mapped");
    assert_eq!(events[1].1["origin"], "fork");
    assert_eq!(events[1].1["pid"], CHILD);
    let copy_id = events[1].1["region"]["id"].as_u64().unwrap();
    assert_ne!(copy_id, 5);
    let maps = correlator.table.maps();
    let blocks: Vec<_> = maps
        .regions()
        .into_iter()
        .filter(|(key, _)| key_owner(&key.1) == (CHILD, child_generation))
        .map(|(_, region)| region)
        .collect();
    assert!(!blocks.is_empty());
    assert!(blocks.iter().all(|b| b.id == copy_id && b.start == 0x10000));
    // The copy is in place: the child no longer falls back to its parent.
    assert!(maps.fork_fallbacks().is_empty());
}

#[test]
fn faults_with_one_stack_in_one_region_are_one_aggregate() {
    let mut correlator = correlator(MemoryMaps::default(), false);
    let r = region(5, 0x10000, 0x20000);
    let stack = [0x401000, 0x402000];
    let mut events = run(
        &mut correlator,
        vec![
            mapped(PID, r),
            fault(PID, r, 0x11000, &stack),
            fault(PID, r, 0x12000, &stack),
            fault(PID, r, 0x13000, &[0x401000, 0x403000]),
        ],
    );
    let mut out = Vec::new();
    correlator.flush(|a| a.take_all(u64::MAX), &mut out);
    events.extend(
        out.into_iter()
            .map(|t| (t.body.name(), serde_json::to_value(&t.body).unwrap())),
    );
    let counts: Vec<u64> = events
        .iter()
        .filter(|(name, _)| *name == "write_fault")
        .map(|(_, e)| e["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), 3);
    assert_eq!(counts.len(), 2, "two stacks: {counts:?}");
}
