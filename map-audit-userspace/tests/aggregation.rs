//! The default aggregated mode: faults merged by (process, region, stack), reported with
//! `count`, `pages`, `first_ts`, `last_ts` at unmap, exit and each flush interval, with
//! counts that add up exactly (real eBPF; needs root).

mod common;

use common::{Agent, run_agent, stack_symbols, workload};

#[test]
fn a_quarter_million_faults_become_a_handful_of_lines_that_add_up() {
    // Each fault is still one ring-buffer record (kernel-side aggregation is the
    // performance issue's); a 256 MiB ring buffer holds all 262,144 even when the test
    // machine is busy, so every fault must be in a count here.
    let (pages, cycles) = (65_536u64, 4u64);
    let run = run_agent(&[
        "run",
        "--ringbuf-size",
        "268435456",
        "--",
        workload().to_str().unwrap(),
        "cycles",
        &pages.to_string(),
        &cycles.to_string(),
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    run.assert_accounting();
    let counters = &run.stopped()["counters"];
    assert_eq!(
        counters["kernel"]["faults_lost_ringbuf_full"], 0,
        "{counters}"
    );

    let writes: Vec<_> = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|e| stack_symbols(e)[0] == "write_pages")
        .collect();
    // One line per mapping, flushed at its unmap; a flush interval passing mid-cycle
    // splits one in two, so group by region.
    let mut by_region = std::collections::BTreeMap::<u64, (u64, u64)>::new();
    for event in &writes {
        let entry = by_region
            .entry(event["region"]["id"].as_u64().unwrap())
            .or_default();
        entry.0 += event["count"].as_u64().unwrap();
        entry.1 += event["pages"].as_u64().unwrap();
        assert!(event["first_ts"].as_str().unwrap() <= event["last_ts"].as_str().unwrap());
    }
    assert_eq!(by_region.len() as u64, cycles);
    assert!(
        by_region
            .values()
            .all(|&(count, distinct)| count == pages && distinct == pages),
        "{by_region:?}"
    );
    assert!(writes.len() as u64 <= 2 * cycles);
    let total: u64 = run
        .of_kind("write_fault")
        .iter()
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    assert_eq!(
        total,
        counters["kernel"]["faults_matched"].as_u64().unwrap(),
        "every fault is in a count"
    );
    assert!(
        run.of_kind("write_fault").len() < 40,
        "a handful of lines, not {}",
        run.of_kind("write_fault").len()
    );
}

#[test]
fn open_aggregates_are_flushed_at_the_interval() {
    // wait-anon: the process maps and writes, then lingers; its region stays mapped
    // until it exits, so only the flush interval can report the writes before that.
    let mut target = std::process::Command::new(workload())
        .args(["wait-anon", "3"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = target.id();
    let agent = Agent::start(&[
        "run",
        "--pid",
        &pid.to_string(),
        "--flush-interval",
        "0.2",
        "--stats-interval",
        "0",
    ]);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    std::io::Write::write_all(&mut target.stdin.take().unwrap(), b"go\n").unwrap();
    agent.wait_for("an aggregated write_fault", |e| {
        e["event"] == "write_fault" && e["count"] == 3
    });
    let _ = target.wait();
    let run = agent.stop();
    run.assert_accounting();
}
