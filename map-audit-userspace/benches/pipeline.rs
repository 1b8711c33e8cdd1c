//! Throughput of the agent's userspace pipeline per event, on one core, through the
//! real correlator (the kernel's tables in memory): checked decoding of a ring-buffer
//! record, correlation, its user stack (seen before: rendered once) and JSON
//! serialisation (every-event mode), or aggregation (the default mode's per-fault
//! work); and, apart, symbolising and rendering a stack never seen before (warm
//! symbol cache). The stack is this benchmark's own code, so blazesym reads a
//! real ELF with DWARF. Run: `cargo bench -p map-audit --bench pipeline`.

use std::{hint::black_box, io, sync::Arc};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use map_audit::{
    kernel::{region_table::RegionTable, table_maps::MemoryMaps},
    output::{clock::Clock, json_writer::JsonWriter},
    pipeline::{
        correlator::{Correlator, Options},
        items::{Item, Timed},
        records::{self, Record},
    },
    proc::process_maps::ProcessMaps,
    stacks::{exec_image::ImageMap, symbolizer::StackSymbolizer},
};
use map_audit_common::{
    records::{FaultRecord, KIND_REGION_MAPPED, KIND_WRITE_FAULT, RecordHeader, RegionRecord},
    region::{PATH_MATCHED, Region},
};

#[inline(never)]
fn leaf() -> u64 {
    black_box(1)
}

#[inline(never)]
fn caller() -> u64 {
    leaf() + black_box(2)
}

/// A write-fault record as the kernel sends it, with 8 frames in this binary.
fn record_bytes() -> Vec<u8> {
    let mut record: FaultRecord = unsafe { std::mem::zeroed() };
    record.header.kind = KIND_WRITE_FAULT;
    record.header.tgid = std::process::id();
    record.header.tid = std::process::id();
    record.address = 0x7f00_0000_1000;
    record.error_code = 6;
    record.region = Region {
        start: 0x7f00_0000_0000,
        end: 0x7f00_1000_0000,
        prot: 3,
        flags: 0x22,
        id: 1,
        generation: 1,
        path_filter: PATH_MATCHED,
        ..Default::default()
    };
    let code = [
        leaf as *const () as u64,
        caller as *const () as u64,
        record_bytes as *const () as u64,
        pipeline as *const () as u64,
    ];
    for (i, slot) in record.stack.iter_mut().take(8).enumerate() {
        *slot = code[i % code.len()] + 8;
    }
    record.stack_bytes = 8 * 8;
    let bytes = unsafe {
        std::slice::from_raw_parts((&raw const record).cast::<u8>(), size_of::<FaultRecord>())
    };
    bytes.to_vec()
}

/// The real correlator (kernel tables in memory), with this process's maps and the
/// region mapped, in every-event or aggregated mode.
fn correlator(every_event: bool, maps: &Arc<ProcessMaps>, region: Region) -> Correlator {
    let mut correlator = Correlator::new(
        RegionTable::new(Box::new(MemoryMaps::default())),
        Options::without_kernel(every_event),
        Clock::new(),
    );
    let mapped = RegionRecord {
        header: RecordHeader {
            kind: KIND_REGION_MAPPED,
            tgid: std::process::id(),
            tid: std::process::id(),
            ..Default::default()
        },
        region,
        range_start: region.start,
        range_end: region.end,
        ..Default::default()
    };
    let mut out = Vec::new();
    correlator.handle(Item::Maps(std::process::id(), maps.clone()), &mut out);
    correlator.handle(Item::Record(Record::RegionMapped(mapped)), &mut out);
    correlator
}

/// Decodes `bytes` and runs the record through `correlator`, writing what it gives.
fn one_record(
    correlator: &mut Correlator,
    writer: &mut JsonWriter,
    bytes: &[u8],
    out: &mut Vec<Timed>,
) {
    let record = records::decode(black_box(bytes)).expect("a valid record");
    correlator.handle(Item::Record(record), out);
    for timed in out.drain(..) {
        writer.write(timed.ts_ns, timed.body);
    }
}

fn pipeline(c: &mut Criterion) {
    let bytes = record_bytes();
    let Ok(Record::WriteFault(fault)) = records::decode(&bytes) else {
        unreachable!()
    };
    let maps = Arc::new(ProcessMaps::read(std::process::id()).expect("own maps"));
    let mut writer = JsonWriter::with_writer(Box::new(io::sink()), Clock::new());
    let mut out = Vec::new();

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    // The correlator's path: a repeated stack is symbolised and rendered once.
    let mut every_event = correlator(true, &maps, fault.region);
    group.bench_function(
        "every_event: decode + correlate + stack (seen before) + JSON",
        |b| b.iter(|| one_record(&mut every_event, &mut writer, &bytes, &mut out)),
    );
    // A stack never seen before (symbol cache warm): symbolised and rendered per event.
    let symbolizer = StackSymbolizer::default();
    let image = Arc::new(ImageMap::default());
    group.bench_function("new stack: symbolise + render", |b| {
        b.iter(|| {
            let depth = fault.stack_bytes as usize / 8;
            let stack = symbolizer.symbolize(&maps, &image, &fault.stack[..depth]);
            black_box(serde_json::value::to_raw_value(&stack.frames).unwrap());
        })
    });
    let mut aggregated = correlator(false, &maps, fault.region);
    group.bench_function("aggregated: decode + correlate + aggregate", |b| {
        b.iter(|| one_record(&mut aggregated, &mut writer, &bytes, &mut out))
    });
    group.finish();
    aggregated.flush(|a| a.take_all(u64::MAX), &mut out);
    black_box(out.len());
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
