//! Re-arm rounds (`--rearm-interval`): a process whose memory was warm before the agent
//! attached still shows its writers, round after round. They need soft-dirty bits
//! (CONFIG_MEM_SOFT_DIRTY), which this project's CI host lacks: those tests are
//! ignored here, with the reason in their names, and run for real in the guests of
//! `cargo xtask vm-test` (Debian's kernels have them). The refusal runs here.

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
};

use common::{Agent, Run, hex, region_range, run_agent, stack_symbols};
use serde_json::Value;

/// Pages of the warm workload's region: one rewritten by `rewrite_one`, the rest by
/// `rewrite_all`.
const PAGES: u64 = 256;

/// `tests/workloads/rearm.c`, built -O2 without frame pointers, or the one
/// `MAP_AUDIT_TEST_REARM` names (prebuilt for the VM guests). Its name must differ from
/// this test binary's in the first 15 bytes: `--comm` would audit the tests too.
fn rearm_workload() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        common::c_workload(
            "MAP_AUDIT_TEST_REARM",
            "rearm.c",
            "rearm-workload",
            &["-O2", "-g"],
        )
    })
}

fn kernel_has_soft_dirty() -> bool {
    std::fs::read_to_string("/proc/self/smaps")
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("VmFlags:"))
        .any(|flags| flags.split_whitespace().any(|f| f == "sd"))
}

#[test]
fn rearm_is_refused_in_one_sentence_without_soft_dirty_and_runs_with_it() {
    let run = run_agent(&["run", "--rearm-interval", "1", "--", "true"]);
    if kernel_has_soft_dirty() {
        // How many rounds start before `true` ends depends on the machine's speed: the
        // rounds themselves are the ignored tests' subject.
        assert!(run.status.success(), "{}", run.stderr);
        assert_eq!(run.of_kind("agent_started").len(), 1);
        assert!(run.stopped()["counters"]["agent"]["rearm_rounds"].is_u64());
    } else {
        assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(
            run.stderr.trim(),
            format!(
                "map-audit: --rearm-interval needs soft-dirty bits, which this kernel ({}) was built without (CONFIG_MEM_SOFT_DIRTY); run without it, or on a kernel that has them (Debian's, Ubuntu's and Fedora's x86-64 kernels do)",
                release.trim()
            )
        );
        assert!(run.events.is_empty(), "nothing loaded, nothing printed");
    }
}

#[test]
fn rearm_with_all_or_a_budget_alone_is_a_usage_error() {
    for args in [
        &["run", "--all", "--rearm-interval", "1"][..],
        &["run", "--pid", "1", "--rearm-budget", "100"],
        &[
            "run",
            "--pid",
            "1",
            "--rearm-interval",
            "1",
            "--flush-interval",
            "2",
        ],
    ] {
        let out = Command::new(common::AGENT).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
    }
}

/// The warm workload, started by the test: its region is written once before the
/// agent attaches, then rewritten every millisecond.
struct WarmProcess {
    child: Child,
    region: (u64, u64),
}

impl WarmProcess {
    fn start(seconds: u32) -> Self {
        let mut child = Command::new(rearm_workload())
            .args(["warm", &PAGES.to_string(), &seconds.to_string()])
            .stderr(Stdio::piped())
            .spawn()
            .expect("the workload starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut region = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(range) = line.strip_prefix("workload: region ") {
                let mut parts = range.split_whitespace().map(hex);
                region = Some((parts.next().unwrap(), parts.next().unwrap()));
            }
            if line == "workload: ready 1" {
                break;
            }
        }
        Self {
            child,
            region: region.expect("the workload printed its region"),
        }
    }
}

impl Drop for WarmProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Faults of each writer (innermost frame) in each round, in `region` of `pid`.
fn faults_by_round(run: &Run, pid: u64, region: (u64, u64)) -> BTreeMap<(u64, String), u64> {
    let mut counts = BTreeMap::new();
    for e in run.of_kind("write_fault") {
        let address = hex(e["address"].as_str().unwrap());
        if e["pid"] != pid || !(region.0..region.1).contains(&address) {
            continue;
        }
        let writer = stack_symbols(e).first().cloned().unwrap_or_default();
        let round = e["round"].as_u64().expect("every write_fault has a round");
        *counts.entry((round, writer)).or_default() += e["count"].as_u64().unwrap();
    }
    counts
}

/// Rounds `rounds` each show both writers, with one fault per page each: a
/// write-protect fault (present | write | user, where the hook sees the error code),
/// walked from the writer to `main` (where the hook gives the walk user registers).
fn assert_both_writers_each_round(run: &Run, pid: u64, region: (u64, u64), rounds: &[u64]) {
    assert_both_writers_each_round_by(run, pid, region, rounds, "raw-tracepoint");
}

fn assert_both_writers_each_round_by(
    run: &Run,
    pid: u64,
    region: (u64, u64),
    rounds: &[u64],
    hook: &str,
) {
    let counts = faults_by_round(run, pid, region);
    for &round in rounds {
        let all = counts.get(&(round, "rewrite_all".into())).copied();
        let one = counts.get(&(round, "rewrite_one".into())).copied();
        assert_eq!(
            (all, one),
            (Some(PAGES - 1), Some(1)),
            "round {round}: one fault per page per writer; all rounds: {counts:?}"
        );
    }
    for e in run.of_kind("write_fault") {
        // Only the buffer: the kernel's own writes elsewhere (rseq's area on the brk
        // heap, written on the way back to user mode) carry the interrupted writer's
        // user stack but a kernel-mode error code.
        let address = hex(e["address"].as_str().unwrap());
        if e["pid"] != pid
            || e["round"].as_u64() < Some(rounds[0])
            || !(region.0..region.1).contains(&address)
        {
            continue;
        }
        let symbols = stack_symbols(e);
        if matches!(symbols[0].as_str(), "rewrite_all" | "rewrite_one") {
            if matches!(hook, "raw-tracepoint" | "tp-btf" | "tracepoint") {
                assert_eq!(e["error_code"], 7, "a write-protect fault: {e}");
            }
            // The other hooks walk by `bpf_get_stack` (frame pointers), which this -O2
            // workload has none of: they name the writer, not its callers.
            if matches!(hook, "raw-tracepoint" | "tp-btf") {
                assert!(symbols.contains(&"main".to_string()), "{hook}: {symbols:?}");
            }
        }
    }
    run.assert_accounting();
    let agent = &run.stopped()["counters"]["agent"];
    assert_eq!(agent["rearm_failed"], 0, "{agent}");
    assert!(agent["processes_rearmed"].as_u64() >= Some(rounds.len() as u64));
}

/// Runs the agent on the warm workload until round `last` has been reported.
fn audit_warm_process(scope: &[&str], last: u64) -> (Run, u64, (u64, u64)) {
    audit_warm_process_by(scope, last, "auto")
}

fn audit_warm_process_by(scope: &[&str], last: u64, hook: &str) -> (Run, u64, (u64, u64)) {
    let warm = WarmProcess::start(600);
    let pid = warm.child.id();
    let mut args = vec!["run", "--rearm-interval", "1", "--fault-hook", hook];
    let pid_arg = pid.to_string();
    args.extend(
        scope
            .iter()
            .map(|a| if *a == "PID" { pid_arg.as_str() } else { *a }),
    );
    let agent = Agent::start(&args);
    // A round's aggregates are reported when the next round starts.
    agent.wait_for("a fault of a later round", |e| {
        e["event"] == "write_fault" && e["pid"] == pid && e["round"].as_u64() > Some(last)
    });
    let run = agent.stop();
    (run, u64::from(pid), warm.region)
}

#[test]
#[ignore = "needs soft-dirty bits (CONFIG_MEM_SOFT_DIRTY): runs in cargo xtask vm-test's guests"]
fn needs_soft_dirty_a_warm_process_by_pid_shows_both_writers_each_round() {
    let (run, pid, region) = audit_warm_process(&["--pid", "PID"], 3);
    assert_both_writers_each_round(&run, pid, region, &[1, 2, 3]);
}

/// Every fault hook this kernel can attach sees the re-armed writes (the kprobe and
/// fentry hooks' refusals where they cannot attach are the fault_hooks suite's).
#[test]
#[ignore = "needs soft-dirty bits (CONFIG_MEM_SOFT_DIRTY): runs in cargo xtask vm-test's guests"]
fn needs_soft_dirty_every_fault_hook_sees_the_rearmed_writes() {
    let mut hooks = vec!["tp-btf", "tracepoint", "perf-event"];
    if common::kernel_has_kprobes() {
        hooks.push("kprobe");
    }
    if std::fs::read_to_string("/sys/kernel/tracing/available_filter_functions")
        .is_ok_and(|functions| functions.lines().any(|l| l == "handle_mm_fault"))
    {
        hooks.push("fentry");
    }
    for hook in hooks {
        let (run, pid, region) = audit_warm_process_by(&["--pid", "PID"], 2, hook);
        assert_both_writers_each_round_by(&run, pid, region, &[1, 2], hook);
        eprintln!("{hook}: both writers in rounds 1 and 2");
    }
}

#[test]
#[ignore = "needs soft-dirty bits (CONFIG_MEM_SOFT_DIRTY): runs in cargo xtask vm-test's guests"]
fn needs_soft_dirty_a_warm_process_by_comm_shows_both_writers_each_round() {
    let comm = rearm_workload().file_name().unwrap().to_string_lossy();
    let comm = &comm[..comm.len().min(15)];
    let (run, pid, region) = audit_warm_process(&["--comm", comm], 3);
    assert_both_writers_each_round(&run, pid, region, &[1, 2, 3]);
}

#[test]
#[ignore = "needs soft-dirty bits (CONFIG_MEM_SOFT_DIRTY): runs in cargo xtask vm-test's guests"]
fn needs_soft_dirty_a_command_shows_its_first_writes_then_rounds() {
    let workload = rearm_workload().to_string_lossy().into_owned();
    let mut agent = Agent::start(&[
        "run",
        "--rearm-interval",
        "1",
        "--",
        &workload,
        "warm",
        &PAGES.to_string(),
        "600",
    ]);
    // Ended once round 4 has been reported (how long that takes depends on how fast the
    // agent keeps up: an emulated guest is slow).
    let later = agent.first("a fault of round 5", |e| {
        e["event"] == "write_fault" && e["round"].as_u64() > Some(4)
    });
    let pid = later["pid"].as_u64().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let run = agent.wait();
    assert_eq!(run.stopped()["command_exit_code"], 128 + libc::SIGTERM);
    let region = run.workload_range("region");
    // The first writes fault on pages not present yet (error code: write | user).
    let first_touch: u64 = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|e| e["pid"] == pid && e["error_code"] == 6)
        .filter(|e| (region.0..region.1).contains(&hex(e["address"].as_str().unwrap())))
        .map(|e| e["pages"].as_u64().unwrap())
        .sum();
    assert!(first_touch >= PAGES, "first writes: {first_touch} pages");
    assert_both_writers_each_round(&run, pid, region, &[2, 3, 4]);
}

#[test]
#[ignore = "needs soft-dirty bits (CONFIG_MEM_SOFT_DIRTY): runs in cargo xtask vm-test's guests"]
fn needs_soft_dirty_rounds_racing_munmap_mremap_and_exit_lose_nothing() {
    let workload = rearm_workload().to_string_lossy().into_owned();
    let run = run_agent(&[
        "run",
        "--rearm-interval",
        "0.2",
        "--",
        &workload,
        "churn",
        "6",
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stopped()["command_exit_code"], 0);
    run.assert_accounting();
    run.assert_regions_close_once();
    // Every fault lies in a region the stream announced for its process.
    let mapped: Vec<(u64, (u64, u64))> = run
        .of_kind("region_mapped")
        .into_iter()
        .map(|e| (e["pid"].as_u64().unwrap(), region_range(e)))
        .collect();
    let faults = run.of_kind("write_fault");
    assert!(!faults.is_empty());
    for e in faults {
        let (pid, address) = (
            e["pid"].as_u64().unwrap(),
            hex(e["address"].as_str().unwrap()),
        );
        assert!(
            mapped
                .iter()
                .any(|&(p, (start, end))| p == pid && (start..end).contains(&address)),
            "a fault outside every announced region: {e}"
        );
    }
    // Rounds re-armed the churning process (the pipeline starts them, so how many
    // depends on how far it keeps up; each is counted either way).
    let agent: &Value = &run.stopped()["counters"]["agent"];
    assert!(agent["processes_rearmed"].as_u64() >= Some(2), "{agent}");
}
