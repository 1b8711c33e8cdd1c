//! Scope and region filters, each with a matching and a non-matching case, decided in
//! the kernel (real eBPF; needs root).

mod common;

use std::process::Command;

use common::{Agent, Run, hex, region_range, run_agent, workload, written_start};
use serde_json::Value;

fn faults_in(run: &Run, (start, end): (u64, u64)) -> usize {
    run.of_kind("write_fault")
        .into_iter()
        .filter(|e| (start..end).contains(&hex(e["address"].as_str().unwrap())))
        .count()
}

/// The demo workload (4-page anonymous region "written", 2-page shared file "shared")
/// under the given extra flags.
fn demo(flags: &[&str]) -> (Run, (u64, u64), (u64, u64)) {
    let mut args = vec!["run", "--every-event"];
    args.extend_from_slice(flags);
    args.extend(["--", workload().to_str().unwrap(), "demo"]);
    let run = run_agent(&args);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    run.assert_accounting();
    let (anon, shared) = (run.workload_range("written"), run.workload_range("shared"));
    (run, anon, shared)
}

#[test]
fn wx_regions_are_marked_and_wx_only_audits_only_them() {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        workload().to_str().unwrap(),
        "wx",
    ]);
    let (rw, rwx) = (run.workload_range("rw"), run.workload_range("rwx"));
    let mapped = |range| {
        run.of_kind("region_mapped")
            .into_iter()
            .find(|e| region_range(e) == range)
            .cloned()
    };
    assert_eq!(
        mapped(rwx).unwrap()["region"]["wx"],
        true,
        "reported W^X on creation"
    );
    assert_eq!(mapped(rw).unwrap()["region"]["wx"], false);

    let run = run_agent(&[
        "run",
        "--every-event",
        "--wx-only",
        "--",
        workload().to_str().unwrap(),
        "wx",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let (rw, rwx) = (run.workload_range("rw"), run.workload_range("rwx"));
    assert_eq!(
        faults_in(&run, rwx),
        2,
        "writes to the W^X region are audited"
    );
    assert_eq!(
        faults_in(&run, rw),
        0,
        "writes to a plain RW region are not"
    );
    assert!(
        run.of_kind("region_mapped")
            .iter()
            .all(|e| e["region"]["wx"] == true)
    );
    assert!(
        run.stopped()["counters"]["kernel"]["faults_filtered"]
            .as_u64()
            .unwrap()
            >= 2
    );
    run.assert_accounting();
}

#[test]
fn shared_only_and_anon_only() {
    let (run, anon, shared) = demo(&["--shared-only"]);
    assert_eq!((faults_in(&run, shared), faults_in(&run, anon)), (2, 0));
    // The anonymous range is written twice (mapped, unmapped, mapped again): 2 x 4 pages.
    let (run, anon, shared) = demo(&["--anon-only"]);
    assert_eq!((faults_in(&run, shared), faults_in(&run, anon)), (0, 8));
}

#[test]
fn min_size() {
    let (run, anon, shared) = demo(&["--min-size", "12288"]);
    assert_eq!(
        (faults_in(&run, anon), faults_in(&run, shared)),
        (8, 0),
        "16 KiB passes, 8 KiB does not"
    );
}

#[test]
fn path_glob_is_applied_to_file_backed_regions() {
    let (run, anon, shared) = demo(&["--path", "/tmp/map-audit-demo-*"]);
    assert_eq!((faults_in(&run, shared), faults_in(&run, anon)), (2, 0));
    let mapped: Vec<&Value> = run.of_kind("region_mapped");
    assert!(mapped.iter().all(|e| {
        e["region"]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/tmp/map-audit-demo-"))
    }));
    let (run, anon, shared) = demo(&["--path", "/nonexistent/*"]);
    assert_eq!((faults_in(&run, shared), faults_in(&run, anon)), (0, 0));
}

#[test]
fn a_cgroup_tree_is_the_scope() {
    let root = std::path::Path::new("/sys/fs/cgroup/unified");
    let root = if root.join("cgroup.procs").exists() {
        root
    } else {
        std::path::Path::new("/sys/fs/cgroup")
    };
    let cgroup = root.join(format!("map-audit-test-{}", std::process::id()));
    std::fs::create_dir(&cgroup).expect("creating a cgroup v2 directory (needs root and cgroup2)");
    let agent = Agent::start(&[
        "run",
        "--every-event",
        "--cgroup",
        cgroup.to_str().unwrap(),
        "--stats-interval",
        "0",
    ]);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    let inside = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec {} anon 2",
            cgroup.display(),
            workload().display()
        ))
        .output()
        .unwrap();
    let outside = Command::new(workload())
        .args(["anon", "2"])
        .output()
        .unwrap();
    assert!(inside.status.success() && outside.status.success());
    let (inside_start, outside_start) = (written_start(&inside), written_start(&outside));
    agent.wait_for("the inside process's exit", |e| {
        e["event"] == "region_unmapped" && e["region"]["start"] == format!("{inside_start:#x}")
    });
    let run = agent.stop();
    let _ = std::fs::remove_dir(&cgroup);
    assert_eq!(
        faults_in(&run, (inside_start, inside_start + 2 * 4096)),
        4,
        "the process in the cgroup is audited"
    );
    let outside_pid_events = run
        .events
        .iter()
        .filter(|e| e["region"]["start"] == format!("{outside_start:#x}"))
        .count();
    assert_eq!(outside_pid_events, 0, "a process outside the cgroup is not");
    run.assert_accounting();
}

#[test]
fn all_audits_every_process_but_the_agent() {
    let agent = Agent::start(&[
        "run",
        "--every-event",
        "--all",
        "--stats-interval",
        "0",
        "--path",
        "/tmp/map-audit-demo-*",
    ]);
    let agent_pid = agent.pid();
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    let out = Command::new(workload()).arg("demo").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    let shared = text
        .lines()
        .find_map(|l| l.strip_prefix("workload: shared "))
        .unwrap()
        .to_string();
    let start = hex(shared.split_whitespace().next().unwrap());
    agent.wait_for("the demo's shared writes", |e| {
        e["event"] == "region_unmapped" && e["region"]["start"] == format!("{start:#x}")
    });
    let run = agent.stop();
    assert_eq!(
        faults_in(&run, (start, start + 2 * 4096)),
        2,
        "a process started after the agent is audited"
    );
    // The agent's own process never shows up (its writes would feed back).
    assert!(
        run.events.iter().all(|e| e["pid"] != agent_pid),
        "the agent does not audit itself"
    );
    run.assert_accounting();
}
