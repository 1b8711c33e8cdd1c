//! The default aggregated mode: faults merged by (process, region, stack), reported with
//! `count`, `pages`, `first_ts`, `last_ts` at unmap, exit and each flush interval, with
//! counts that add up exactly (real eBPF; needs root).

mod common;

use common::{Agent, hex, region_range, run_agent, stack_symbols, workload};

#[test]
fn a_quarter_million_faults_become_a_handful_of_lines_that_add_up() {
    // The kernel counts repeats in its tallies and sends one record per (region,
    // stack): the default ring buffer loses nothing.
    let (pages, cycles) = (65_536u64, 4u64);
    // No flush interval passes during the run (a slow machine can take seconds per
    // cycle): each mapping's line comes at its unmap. The interval has its own test.
    let run = run_agent(&[
        "run",
        "--flush-interval",
        "3600",
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
    // All but the first fault of each stack.
    assert!(
        counters["kernel"]["faults_counted_in_kernel"]
            .as_u64()
            .unwrap()
            >= (pages - 1) * cycles - 64,
        "the repeats were counted in the kernel: {counters}"
    );

    let writes: Vec<_> = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|e| stack_symbols(e)[0] == "write_pages")
        .collect();
    // One line per mapping, flushed at its unmap.
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
    assert_eq!(writes.len() as u64, cycles, "{writes:#?}");
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
fn kernel_tallies_carry_exact_counts_across_flush_intervals() {
    // One long write loop, flushed every 10 ms: its aggregate is reported in several
    // parts, each reopened from the kernel's tally, and the parts add up exactly.
    let pages = 262_144u64;
    let run = run_agent(&[
        "run",
        "--flush-interval",
        "0.01",
        "--",
        workload().to_str().unwrap(),
        "cycles",
        &pages.to_string(),
        "1",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    run.assert_accounting();
    let parts: Vec<_> = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|e| stack_symbols(e)[0] == "write_pages")
        .collect();
    assert!(parts.len() > 1, "reported in parts: {parts:?}");
    let region = &parts[0]["region"];
    let (start, end) = region_range(parts[0]);
    let mut previous_last = String::new();
    for part in &parts {
        assert_eq!(&part["region"], region, "one region");
        let address = hex(part["address"].as_str().unwrap());
        assert!((start..end).contains(&address), "{part}");
        let (first, last) = (
            part["first_ts"].as_str().unwrap(),
            part["last_ts"].as_str().unwrap(),
        );
        assert!(previous_last.as_str() <= first && first <= last, "{part}");
        previous_last = last.to_string();
    }
    let sum = |field: &str| -> u64 { parts.iter().map(|e| e[field].as_u64().unwrap()).sum() };
    assert_eq!((sum("count"), sum("pages")), (pages, pages));
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
