//! msync auditing: `region_synced` for every msync of a tracked region (flags, result,
//! duration, the caller's stack, the pages written since the range's last msync), and
//! `--unsynced-after` warnings. The workload (`tests/workloads/msync.c`, -O2 without
//! frame pointers) writes a MAP_SHARED file and flushes it from named functions.

mod common;

use std::{
    path::{Path, PathBuf},
    sync::OnceLock,
};

use common::{Run, hex, run_agent, stack_symbols};
use serde_json::{Value, json};

/// Its name must differ from this test binary's in the first 15 bytes.
fn msync_workload() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        common::c_workload(
            "MAP_AUDIT_TEST_MSYNC",
            "msync.c",
            "msync-workload",
            &["-O2", "-g"],
        )
    })
}

/// Runs the workload under the agent, on a file of its own.
fn run(agent_args: &[&str], workload_args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data");
    let mut args = vec!["run"];
    args.extend_from_slice(agent_args);
    args.extend([
        "--",
        msync_workload().to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    args.extend_from_slice(workload_args);
    let run = run_agent(&args);
    assert!(run.status.success(), "{}", run.stderr);
    run.assert_accounting();
    run
}

/// `workload: NAME ADDRESS` from the workload's stderr.
fn mapping(run: &Run, name: &str) -> u64 {
    let prefix = format!("workload: {name} ");
    let line = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no `{name}` line; stderr:\n{}", run.stderr));
    hex(line.trim())
}

/// (flags, result, pages_written_since_last_sync, region start) of each
/// `region_synced`, in order.
fn calls(run: &Run) -> Vec<(Value, Value, Value, u64)> {
    run.of_kind("region_synced")
        .into_iter()
        .map(|e| {
            (
                e["flags"].clone(),
                e["result"].clone(),
                e["pages_written_since_last_sync"].clone(),
                hex(e["region"]["start"].as_str().unwrap()),
            )
        })
        .collect()
}

#[test]
fn every_msync_is_reported_with_its_flags_result_caller_and_pages_written_since_the_last() {
    let run = run(&["--every-event"], &[]);
    let (map, short_map, anon, read_only, synced) = (
        mapping(&run, "map"),
        mapping(&run, "short_map"),
        mapping(&run, "anon"),
        mapping(&run, "read_only"),
        mapping(&run, "synced"),
    );
    let sync = || json!(["sync"]);
    // The calls, and the stack above libc's msync.
    let expected = [
        // Two write/sync cycles: 5 pages, then 4 (2 of them rewritten after the sync).
        (
            (sync(), json!(0), json!(5), map),
            ["flush_sync", "cycles", "main"],
        ),
        (
            (sync(), json!(0), json!(4), map),
            ["flush_sync", "cycles", "main"],
        ),
        (
            (sync(), json!(0), json!(0), map),
            ["flush_sync", "cycles", "main"],
        ),
        (
            (json!(["async"]), json!(0), json!(2), map),
            ["flush_async", "main", "__libc_start_call_main"],
        ),
        (
            (sync(), json!("EINVAL"), json!(0), map),
            ["flush_unaligned", "main", "__libc_start_call_main"],
        ),
        (
            (
                json!(["sync", "invalidate"]),
                json!("ENOMEM"),
                json!(0),
                short_map,
            ),
            ["flush_past_the_end", "main", "__libc_start_call_main"],
        ),
        // msync does not write anonymous memory back: no page count.
        (
            (sync(), json!(0), Value::Null, anon),
            ["flush_sync", "main", "__libc_start_call_main"],
        ),
        (
            (sync(), json!(0), json!(0), read_only),
            ["flush_sync", "main", "__libc_start_call_main"],
        ),
        // The forked child's own 2 pages.
        (
            (sync(), json!(0), json!(2), map),
            ["flush_sync", "main", "__libc_start_call_main"],
        ),
        (
            (sync(), json!(0), json!(1), synced),
            ["flush_sync", "main", "__libc_start_call_main"],
        ),
    ];
    let got = calls(&run);
    assert_eq!(got.len(), expected.len(), "{got:#?}");
    let events = run.of_kind("region_synced");
    let parent = events[0]["pid"].as_u64().unwrap();
    for (i, ((call, callers), event)) in expected.iter().zip(&events).enumerate() {
        assert_eq!(&got[i], call, "call {i}: {event}");
        let symbols = stack_symbols(event);
        assert_eq!(
            symbols[0], "msync",
            "call {i}: the innermost frame is libc's: {event}"
        );
        let child = i == 8;
        assert_eq!(event["pid"].as_u64().unwrap() != parent, child, "{event}");
        // The child's too: right after the fork its walk uses its parent's tables.
        assert_eq!(&symbols[1..4], callers, "call {i}: {event}");
        assert_eq!(event["stack_end"], "complete", "{event}");
        assert!(event["duration_ns"].as_u64().unwrap() > 0);
        assert!(event.get("count").is_none(), "every-event mode: {event}");
    }
    // A call names the range it was given.
    assert_eq!(
        events[0]["range"],
        json!({"start": format!("{map:#x}"), "end": format!("{:#x}", map + 16 * 4096)})
    );
    assert_eq!(
        events[4]["range"]["start"],
        json!(format!("{:#x}", map + 1))
    );
    // The child's write faults, in the parent's regions until the agent copies them,
    // are walked with the parent's tables too.
    let child = events[8]["pid"].clone();
    let child_writes: Vec<&Value> = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|e| e["pid"] == child && hex(e["region"]["start"].as_str().unwrap()) == map)
        .collect();
    assert_eq!(child_writes.len(), 2, "{child_writes:#?}");
    for write in child_writes {
        assert_eq!(
            &stack_symbols(write)[..2],
            ["write_pages", "main"],
            "{write}"
        );
        assert_eq!(write["stack_end"], "complete", "{write}");
    }
    assert!(run.of_kind("region_unsynced").is_empty(), "off by default");
    let kernel = &run.stopped()["counters"]["kernel"];
    assert_eq!(kernel["msyncs"], 10);
    assert_eq!(kernel["msyncs_untracked"], 0);
    // 5 + 4 + 2 + 2 (the child's) + 1 (unsynced) + 1 (the last mapping) pages dirtied.
    assert_eq!(kernel["pages_dirtied"], 15);
}

#[test]
fn msyncs_aggregate_by_process_region_stack_flags_and_result() {
    let rounds = 3;
    let run = run(&[], &[&rounds.to_string()]);
    let events = run.of_kind("region_synced");
    let total: u64 = events.iter().map(|e| e["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 3 * rounds + 7, "every call is counted once");
    let map = mapping(&run, "map");
    // The cycles' three call sites, each called once per round.
    let cycles: Vec<&&Value> = events
        .iter()
        .filter(|e| stack_symbols(e).contains(&"cycles".to_string()))
        .collect();
    assert_eq!(cycles.len(), 3, "{cycles:#?}");
    let mut pages: Vec<u64> = cycles
        .iter()
        .map(|e| {
            assert_eq!(e["count"], rounds);
            assert_eq!(hex(e["region"]["start"].as_str().unwrap()), map);
            assert!(e["first_ts"].as_str().unwrap() <= e["last_ts"].as_str().unwrap());
            e["pages_written_since_last_sync"].as_u64().unwrap()
        })
        .collect();
    pages.sort();
    // Totals over the rounds: each round writes 5 pages, syncs, writes 4, syncs twice.
    assert_eq!(pages, [0, 4 * rounds, 5 * rounds]);
    assert!(run.of_kind("region_unsynced").is_empty());
}

#[test]
fn unsynced_after_warns_for_pages_unmapped_or_left_unsynced_and_not_for_synced_ones() {
    let run = run(&["--every-event", "--unsynced-after", "0.2"], &["1", "700"]);
    let map = mapping(&run, "map");
    let warnings = run.of_kind("region_unsynced");
    let summary: Vec<(String, u64, u64)> = warnings
        .iter()
        .map(|w| {
            (
                w["reason"].as_str().unwrap().to_string(),
                w["pages"].as_u64().unwrap(),
                hex(w["region"]["start"].as_str().unwrap()),
            )
        })
        .collect();
    // Page 15 stayed written 700 ms before its msync; page 14 was unmapped unsynced.
    // The `synced` mapping was written, synced and unmapped: no warning.
    assert_eq!(
        summary,
        [
            ("unflushed".to_string(), 1, map),
            ("unmapped".to_string(), 1, map)
        ]
    );
    let workload_pid = run.of_kind("region_synced")[0]["pid"].clone();
    for warning in &warnings {
        assert_eq!(warning["pid"], workload_pid);
    }
    assert_eq!(
        run.stopped()["counters"]["agent"]["region_unsynced_events"],
        2
    );
}

#[test]
fn region_filters_apply_to_msyncs_and_are_counted() {
    let run = run(&["--every-event", "--path", "/nonexistent/*"], &[]);
    assert!(run.of_kind("region_synced").is_empty());
    let counters = &run.stopped()["counters"];
    assert_eq!(counters["kernel"]["msyncs"], 10);
    assert_eq!(counters["agent"]["msyncs_filtered_by_agent"], 10);
}

#[test]
fn report_shows_who_flushes_which_file_how_often_and_how_long() {
    let run = run(&[], &["2"]);
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("stream.json");
    let lines: Vec<String> = run.events.iter().map(Value::to_string).collect();
    std::fs::write(&stream, lines.join("\n") + "\n").unwrap();
    let out = std::process::Command::new(common::AGENT)
        .args(["report", stream.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let section = text
        .split("\ntop ")
        .find(|s| s.contains("flushes (pid comm: file <- caller)"))
        .unwrap_or_else(|| panic!("no flushes table:\n{text}"));
    // The cycles' three call sites, twice: 2 x (5 + 4 + 0) pages.
    let row = section
        .lines()
        .find(|l| l.ends_with("<- flush_sync <- cycles"))
        .unwrap_or_else(|| panic!("no row for the cycles:\n{section}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        (columns[0], columns[1], columns[4]),
        ("6", "0", "18"),
        "{row}"
    );
    assert!(row.contains(" rw- 64 KiB <- "), "{row}");
    // The failed calls are counted as such.
    let failed: u64 = section
        .lines()
        .skip(2)
        .map(|l| l.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(failed, 2, "EINVAL and ENOMEM:\n{section}");
}
