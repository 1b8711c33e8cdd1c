//! Throughput of the agent's userspace pipeline per event, on one core: checked
//! decoding of a ring-buffer record, its user stack (seen before: rendered once; or new:
//! symbolised with a warm symbol cache and rendered) and JSON serialisation
//! (every-event mode); and decoding plus aggregation (the default mode's per-fault work). The stack is this benchmark's own code, so blazesym reads a
//! real ELF with DWARF. Run: `cargo bench -p map-audit --bench pipeline`.

use std::{hint::black_box, io, sync::Arc};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use map_audit::{
    output::clock::Clock,
    output::events::{Body, ProcessInfo, WriteFault, hex},
    output::json_writer::JsonWriter,
    output::region_names::region_json,
    pipeline::aggregator::{Aggregator, RawFault},
    pipeline::records::{self, Record},
    proc::process_maps::ProcessMaps,
    stacks::exec_image::ImageMap,
    stacks::rendered_stacks::RenderedStacks,
    stacks::symbolizer::StackSymbolizer,
};
use map_audit_common::{
    records::{FaultRecord, KIND_WRITE_FAULT},
    region::Region,
};
use serde_json::value::RawValue;

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

fn pipeline(c: &mut Criterion) {
    let bytes = record_bytes();
    let maps = ProcessMaps::read(std::process::id()).expect("own maps");
    let image = ImageMap::default();
    let symbolizer = StackSymbolizer::new();
    let mut writer = JsonWriter::with_writer(Box::new(io::sink()), Clock::new());
    let process = ProcessInfo {
        pid: 1,
        tid: 1,
        comm: "bench".into(),
        exe: None,
    };

    let maps = Arc::new(maps);
    let image = Arc::new(image);
    let mut rendered = RenderedStacks::default();
    let max_depth = 64;

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(1));
    // The correlator's path: a repeated stack is symbolised and rendered once.
    group.bench_function("every_event: decode + stack (seen before) + JSON", |b| {
        b.iter(|| {
            let Ok(Record::WriteFault(fault)) = records::decode(black_box(&bytes)) else {
                unreachable!()
            };
            let depth = fault.stack_bytes as usize / 8;
            let addrs = &fault.stack[..depth];
            let stack = rendered.get(&maps, &image, addrs, max_depth, || {
                let stack = symbolizer.symbolize(&maps, &image, addrs);
                (stack.frames, stack.unknown_frames)
            });
            write_event(&mut writer, &fault, &process, stack.json.clone());
        })
    });
    // A stack never seen before (symbol cache warm): symbolised and rendered per event.
    group.bench_function("every_event, new stack: decode + symbolise + JSON", |b| {
        b.iter(|| {
            let Ok(Record::WriteFault(fault)) = records::decode(black_box(&bytes)) else {
                unreachable!()
            };
            let depth = fault.stack_bytes as usize / 8;
            let stack = symbolizer.symbolize(&maps, &image, &fault.stack[..depth]);
            let json = serde_json::value::to_raw_value(&stack.frames).unwrap();
            write_event(&mut writer, &fault, &process, Arc::from(json));
        })
    });

    let mut aggregator = Aggregator::default();
    group.bench_function("aggregated: decode + aggregate", |b| {
        b.iter(|| {
            let Ok(Record::WriteFault(fault)) = records::decode(black_box(&bytes)) else {
                unreachable!()
            };
            let depth = fault.stack_bytes as usize / 8;
            aggregator.add(RawFault {
                process: process.clone(),
                maps: maps.clone(),
                image: image.clone(),
                address: fault.address,
                error_code: fault.error_code,
                region: fault.region,
                path: None,
                user_stack: fault.stack[..depth].to_vec(),
                user_stack_truncated: false,
                stack_end: 0,
                kernel_stack: None,
                ts_ns: fault.header.ts_ns,
                stack_hash: 0,
                epoch: u64::from(fault.epoch),
            });
        })
    });
    group.finish();
    black_box(aggregator.take_all(u64::MAX).len());
}

fn write_event(
    writer: &mut JsonWriter,
    fault: &FaultRecord,
    process: &ProcessInfo,
    stack: Arc<RawValue>,
) {
    let event = WriteFault {
        process: process.clone(),
        address: hex(fault.address),
        region: region_json(&fault.region, None),
        access: "user",
        error_code: Some(fault.error_code),
        stack,
        stack_truncated: false,
        stack_end: "complete",
        kernel_stack: None,
        aggregate: None,
    };
    writer.write(Some(fault.header.ts_ns), Body::WriteFault(event));
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
