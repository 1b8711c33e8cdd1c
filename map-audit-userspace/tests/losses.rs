//! Forced losses: each cause is counted, and produced = delivered + counted losses,
//! exactly (`Run::assert_accounting`). Real eBPF; needs root.

mod common;

use common::{run_agent, workload};

fn counter(run: &common::Run, side: &str, name: &str) -> u64 {
    run.stopped()["counters"][side][name].as_u64().unwrap()
}

#[test]
fn a_tiny_ring_buffer_loses_records_and_counts_every_one() {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--ringbuf-size",
        "4096",
        "--",
        workload().to_str().unwrap(),
        "cycles",
        "4096",
        "2",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    assert!(
        counter(&run, "kernel", "faults_lost_ringbuf_full") > 0,
        "a 4 KiB ring buffer overflows"
    );
    run.assert_accounting();
    run.assert_kernel_tables_empty();
}

#[test]
fn a_tiny_region_table_counts_what_did_not_fit() {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--region-table-size",
        "16",
        "--",
        workload().to_str().unwrap(),
        "demo",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    assert!(
        counter(&run, "kernel", "region_table_full") > 0,
        "16 entries are not enough for a process"
    );
    run.assert_accounting();
    run.assert_kernel_tables_empty();
}

#[test]
fn a_low_rate_limit_holds_back_and_counts_the_flood() {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--rate-limit",
        "100/s",
        "--",
        workload().to_str().unwrap(),
        "cycles",
        "4096",
        "2",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let limited = counter(&run, "kernel", "faults_rate_limited");
    let delivered = counter(&run, "agent", "faults_delivered");
    assert!(
        limited > 4000,
        "most of the 8192 faults are held back: {limited}"
    );
    assert!(
        delivered < 1000,
        "about 100 per second get through: {delivered}"
    );
    run.assert_accounting();
}
