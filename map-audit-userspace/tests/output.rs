//! The output side: log rotation with SIGHUP, a collector that closes the pipe,
//! SIGTERM, the output file's mode, and stack depth capping (real eBPF; needs root).

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::fs::PermissionsExt,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{AGENT, Run, parse_event, run_agent, stack_symbols, workload};
use serde_json::Value;

fn read_events(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(parse_event)
        .collect()
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn signal(pid: u32, sig: i32) {
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

#[test]
fn sighup_reopens_the_output_file_without_losing_or_repeating_events() {
    let dir = tempfile::tempdir().unwrap();
    let (path, rotated) = (
        dir.path().join("events.jsonl"),
        dir.path().join("events.jsonl.1"),
    );
    let comm = format!("rot{}", std::process::id());
    let program = dir.path().join(&comm);
    std::fs::copy(workload(), &program).unwrap();
    let mut agent = Command::new(AGENT)
        .args([
            "run",
            "--every-event",
            "--comm",
            &comm,
            "--stats-interval",
            "0",
            "--output",
        ])
        .arg(&path)
        .spawn()
        .unwrap();
    wait_until("agent_started", || {
        read_events(&path)
            .iter()
            .any(|e| e["event"] == "agent_started")
    });
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600,
        "the file is created 0600"
    );

    let written = |run: u32| {
        let out = Command::new(&program).args(["anon", "2"]).output().unwrap();
        assert!(out.status.success(), "workload run {run}");
    };
    written(1);
    wait_until("the first run's exit", || {
        read_events(&path)
            .iter()
            .filter(|e| e["event"] == "region_unmapped")
            .count()
            > 0
    });
    std::fs::rename(&path, &rotated).unwrap();
    signal(agent.id(), libc::SIGHUP);
    wait_until("the reopened file", || path.exists());
    written(2);
    wait_until("the second run's exit", || {
        read_events(&path)
            .iter()
            .any(|e| e["event"] == "region_unmapped")
    });
    signal(agent.id(), libc::SIGINT);
    assert!(agent.wait().unwrap().success());

    let (before, after) = (read_events(&rotated), read_events(&path));
    let pids = |events: &[Value]| {
        let mut pids: Vec<u64> = events.iter().filter_map(|e| e["pid"].as_u64()).collect();
        pids.dedup();
        pids
    };
    assert_eq!(
        pids(&before).len(),
        1,
        "the first run is in the rotated file only"
    );
    assert_eq!(
        pids(&after).len(),
        1,
        "the second run is in the new file only"
    );
    assert_ne!(pids(&before), pids(&after));
    let mut lines: Vec<String> = before.iter().chain(&after).map(Value::to_string).collect();
    let total = lines.len();
    lines.sort();
    lines.dedup();
    assert_eq!(lines.len(), total, "no event written twice");
    let run = Run {
        events: before.into_iter().chain(after).collect(),
        stderr: String::new(),
        status: agent.wait().unwrap(),
    };
    run.assert_accounting();
}

#[test]
fn a_closed_stdout_stops_the_agent_with_one_message() {
    let mut target = Command::new(workload())
        .args(["wait-anon", "2"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut agent = Command::new(AGENT)
        .args(["run", "--every-event", "--pid", &target.id().to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(agent.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("agent_started"));
    // The collector goes away (its end of the pipe closes), then there is output.
    target.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let _ = target.wait();
    let out = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr.trim(),
        "map-audit: the output failed (Broken pipe (os error 32)), so the agent stopped"
    );
}

#[test]
fn sigterm_flushes_final_stats_and_exits_zero() {
    let mut agent = common::Agent::start(&["run", "--all", "--path", "/nonexistent"]);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    signal(agent.pid(), libc::SIGTERM);
    let run = agent.wait();
    assert_eq!(run.status.code(), Some(0));
    run.stopped();
    run.assert_accounting();
}

#[test]
fn stacks_are_capped_at_max_stack_depth_and_counted() {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--max-stack-depth",
        "2",
        "--",
        workload().to_str().unwrap(),
        "anon",
        "2",
    ]);
    assert!(run.status.success());
    let faults = run.of_kind("write_fault");
    assert!(
        faults
            .iter()
            .all(|e| e["stack"].as_array().unwrap().len() <= 2)
    );
    let cut: Vec<_> = faults
        .iter()
        .filter(|e| stack_symbols(e) == ["write_pages", "anon"])
        .collect();
    assert!(!cut.is_empty() && cut.iter().all(|e| e["stack_truncated"] == true));
    assert!(
        run.stopped()["counters"]["agent"]["stacks_cut_for_output"]
            .as_u64()
            .unwrap()
            >= cut.len() as u64
    );
    run.assert_accounting();
}

#[test]
fn redacted_addresses_are_offsets_into_their_region_or_file() {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--redact-addresses",
        "--",
        workload().to_str().unwrap(),
        "anon",
        "4",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let written: Vec<&Value> = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|e| stack_symbols(e)[0] == "write_pages")
        .collect();
    let offsets: Vec<&str> = written
        .iter()
        .map(|e| e["address"].as_str().unwrap())
        .collect();
    assert_eq!(offsets, ["0x0", "0x1000", "0x2000", "0x3000"]);
    for fault in &written {
        assert_eq!(fault["region"]["start"], "0x0");
        assert_eq!(fault["region"]["end"], "0x4000");
    }
    // Every frame in a file: an offset inside that file, not a load address.
    for frame in run
        .of_kind("write_fault")
        .iter()
        .flat_map(|e| e["stack"].as_array().unwrap())
    {
        let Some(module) = frame["module"].as_str() else {
            continue;
        };
        let size = std::fs::metadata(module).unwrap().len();
        let addr = common::hex(frame["addr"].as_str().unwrap());
        assert!(addr < size, "{frame} is not an offset into {module}");
    }
    let unmapped = run
        .of_kind("region_unmapped")
        .into_iter()
        .find(|e| e["region"]["id"] == written[0]["region"]["id"])
        .expect("the written region is unmapped");
    assert_eq!(unmapped["range"]["start"], "0x0");
    assert_eq!(unmapped["range"]["end"], "0x4000");
    run.assert_accounting();
}
