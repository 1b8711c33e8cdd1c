//! End-to-end tests of the agent against real workloads, with the real eBPF programs
//! (needs root and a kernel with BTF; CI runs as root). Each test asserts on the JSON
//! the agent prints; every line is also validated against the JSON Schema.

mod common;

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
};

use common::{Agent, hex, region_range, run_agent, stack_symbols, workload};
use serde_json::Value;

const PAGE: u64 = 4096;

fn faults_in(run: &common::Run, start: u64, end: u64) -> Vec<&Value> {
    run.of_kind("write_fault")
        .into_iter()
        .filter(|e| {
            let a = hex(e["address"].as_str().unwrap());
            start <= a && a < end
        })
        .collect()
}

#[test]
fn anonymous_writes_are_reported_once_per_page_with_the_writers_stack() {
    let pages = 16;
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        workload().to_str().unwrap(),
        "anon",
        &pages.to_string(),
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let (start, end) = run.workload_range("written");

    let mapped: Vec<_> = run
        .of_kind("region_mapped")
        .into_iter()
        .filter(|e| region_range(e) == (start, end))
        .collect();
    assert_eq!(
        mapped.len(),
        2,
        "the region and its re-mapping at the same address are both reported"
    );
    assert_eq!(mapped[0]["region"]["prot"], "rw-");
    assert_eq!(
        mapped[0]["region"]["flags"],
        serde_json::json!(["private", "anonymous"])
    );
    assert_eq!(mapped[0]["region"]["path"], Value::Null);

    let first_region_id = &mapped[0]["region"]["id"];
    let faults: Vec<_> = faults_in(&run, start, end)
        .into_iter()
        .filter(|e| &e["region"]["id"] == first_region_id)
        .collect();
    assert_eq!(faults.len() as u64, pages, "one write fault per page");
    let mut pages_hit: Vec<u64> = faults
        .iter()
        .map(|e| hex(e["address"].as_str().unwrap()) / PAGE)
        .collect();
    pages_hit.dedup();
    assert_eq!(pages_hit.len() as u64, pages, "each page faulted once");
    for fault in &faults {
        assert_eq!(region_range(fault), (start, end));
        assert_eq!(fault["access"], "user");
        assert_eq!(fault["error_code"].as_u64().unwrap() & 0x2, 0x2, "a write");
        assert_eq!(fault["pid"], mapped[0]["pid"]);
        let symbols = stack_symbols(fault);
        assert_eq!(
            symbols[0], "write_pages",
            "the writing function is the innermost frame: {symbols:?}"
        );
        assert!(
            symbols.contains(&"main".to_string()),
            "main is on the stack: {symbols:?}"
        );
        assert_eq!(fault["stack"][0]["module"], workload().to_str().unwrap());
        assert!(
            fault["stack"][0]["line"].as_u64().is_some(),
            "the workload has DWARF line info"
        );
    }
    run.assert_accounting();
}

#[test]
fn a_deep_stack_with_large_frames_is_walked_to_main() {
    // 20 nested calls with 1.5 KiB frames: frame pointers far apart, so the walk must
    // move its copy of the stack along.
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        workload().to_str().unwrap(),
        "deep",
        "20",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let (start, end) = run.workload_range("written");
    let faults = faults_in(&run, start, end);
    assert_eq!(faults.len(), 1, "one page written");
    let symbols = stack_symbols(faults[0]);
    let descents = symbols.iter().filter(|s| *s == "descend").count();
    assert_eq!(
        (symbols[0].as_str(), descents),
        ("write_pages", 20),
        "{symbols:?}"
    );
    assert!(symbols.contains(&"main".to_string()), "{symbols:?}");
    assert_eq!(faults[0]["stack_truncated"], false);
}

/// The user stack of the one write of `deep DEPTH`, and the most frames a stack keeps
/// with the object that ran.
fn deep_stack(depth: usize) -> (Value, usize) {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        workload().to_str().unwrap(),
        "deep",
        &depth.to_string(),
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let (start, end) = run.workload_range("written");
    let limit = run.of_kind("agent_started")[0]["programs"]["max_stack_depth"]
        .as_u64()
        .unwrap() as usize;
    (faults_in(&run, start, end)[0].clone(), limit)
}

#[test]
fn a_stack_exactly_as_deep_as_the_limit_is_complete() {
    // 64 frames is the most a stack keeps (`--max-stack-depth` default and the
    // kernel's walk; 32 with the object for kernels before 5.17): a stack of exactly
    // the limit is whole, one frame deeper is truncated.
    let frames = |e: &Value| e["stack"].as_array().unwrap().len();
    let (shallow, limit) = deep_stack(10);
    let exact = 10 + limit - frames(&shallow);
    let (at_limit, _) = deep_stack(exact);
    assert_eq!(frames(&at_limit), limit);
    assert_eq!(at_limit["stack_truncated"], false, "{at_limit}");
    let (beyond, _) = deep_stack(exact + 1);
    assert_eq!(frames(&beyond), limit);
    assert_eq!(beyond["stack_truncated"], true, "{beyond}");
}

#[test]
fn reads_and_read_only_mappings_produce_no_write_faults() {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        workload().to_str().unwrap(),
        "anon",
        "8",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let (read_start, read_end) = run.workload_range("read");
    let (ro_start, ro_end) = run.workload_range("readonly");

    assert_eq!(
        run.of_kind("region_mapped")
            .into_iter()
            .filter(|e| region_range(e) == (read_start, read_end))
            .count(),
        1,
        "the writable region that is only read is tracked"
    );
    assert!(
        faults_in(&run, read_start, read_end).is_empty(),
        "reading a writable region is not a write"
    );
    assert!(
        run.events.iter().all(|e| e
            .get("region")
            .is_none_or(|_| region_range(e) != (ro_start, ro_end))),
        "a read-only mapping is not a region"
    );
    assert!(faults_in(&run, ro_start, ro_end).is_empty());
    run.assert_accounting();
}

#[test]
fn munmap_reports_the_region_and_a_new_mapping_at_the_same_address_is_a_new_region() {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        workload().to_str().unwrap(),
        "anon",
        "4",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let written = run.workload_range("written");
    assert_eq!(
        run.workload_range("rewritten"),
        written,
        "the workload re-mapped the same address"
    );

    let position =
        |pred: &dyn Fn(&Value) -> bool| run.events.iter().position(pred).expect("event present");
    let mapped: Vec<usize> = run
        .events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event"] == "region_mapped" && region_range(e) == written)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(mapped.len(), 2);
    let (old_id, new_id) = (
        &run.events[mapped[0]]["region"]["id"],
        &run.events[mapped[1]]["region"]["id"],
    );
    assert_ne!(old_id, new_id);
    let unmapped =
        position(&|e: &Value| e["event"] == "region_unmapped" && &e["region"]["id"] == old_id);
    assert!(
        mapped[0] < unmapped && unmapped < mapped[1],
        "unmapped between the two mappings"
    );
    let range = &run.events[unmapped]["range"];
    assert_eq!(
        (
            hex(range["start"].as_str().unwrap()),
            hex(range["end"].as_str().unwrap())
        ),
        written
    );

    let faults = faults_in(&run, written.0, written.1);
    let (old, new): (Vec<&Value>, Vec<&Value>) =
        faults.iter().partition(|e| &e["region"]["id"] == old_id);
    assert_eq!(old.len(), 4);
    assert_eq!(
        new.len(),
        4,
        "faults after the re-mapping belong to the new region"
    );
    assert!(old.iter().all(|e| stack_symbols(e)[0] == "write_pages"));
    assert!(
        new.iter()
            .all(|e| &e["region"]["id"] == new_id && stack_symbols(e)[0] == "rewrite_pages")
    );
    run.assert_accounting();
}

#[test]
fn shared_file_mapping_reports_its_path_and_writes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.dat");
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        workload().to_str().unwrap(),
        "shared",
        file.to_str().unwrap(),
        "3",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let (start, end) = run.workload_range("shared");
    let mapped: Vec<_> = run
        .of_kind("region_mapped")
        .into_iter()
        .filter(|e| region_range(e) == (start, end))
        .collect();
    assert_eq!(mapped.len(), 1);
    assert_eq!(mapped[0]["region"]["path"], file.to_str().unwrap());
    assert_eq!(mapped[0]["region"]["flags"], serde_json::json!(["shared"]));
    let faults = faults_in(&run, start, end);
    assert_eq!(faults.len(), 3);
    for fault in faults {
        assert_eq!(fault["region"]["path"], file.to_str().unwrap());
        assert_eq!(stack_symbols(fault)[0], "write_shared_pages");
    }
    run.assert_accounting();
}

#[test]
fn a_file_on_a_mount_only_the_process_sees_gets_the_path_it_sees() {
    // A tmpfs mounted in the workload's own mount namespace (as in a container): the
    // agent's mountinfo does not have it, the process's does.
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().to_str().unwrap();
    let script = format!(
        "mount -t tmpfs map-audit-test {mount_point} && exec {} shared {mount_point}/private.dat 2",
        workload().display()
    );
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        "unshare",
        "--mount",
        "sh",
        "-c",
        &script,
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let (start, end) = run.workload_range("shared");
    let faults = faults_in(&run, start, end);
    assert_eq!(faults.len(), 2);
    for fault in faults {
        assert_eq!(
            fault["region"]["path"],
            format!("{mount_point}/private.dat"),
            "{fault}"
        );
    }
    assert!(
        !std::path::Path::new(&format!("{mount_point}/private.dat")).exists(),
        "the file is only in the workload's mount namespace"
    );
    run.assert_accounting();
}

#[test]
fn processes_outside_the_scope_produce_nothing() {
    // The same kind of writes, at the same time, by a process the agent was not asked
    // to audit (until it is killed below; slow VM guests need the margin).
    let mut outsider = Command::new(workload())
        .args(["loop", "8", "120000", "100"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        workload().to_str().unwrap(),
        "anon",
        "8",
    ]);
    let outsider_pid = outsider.id();
    let outsider_alive = outsider.try_wait().unwrap().is_none();
    let _ = outsider.kill();
    let _ = outsider.wait();
    assert!(outsider_alive, "the outsider ran during the whole audit");
    assert!(run.status.success(), "stderr:\n{}", run.stderr);

    let audited_pid = run.of_kind("region_mapped")[0]["pid"].as_u64().unwrap();
    assert_ne!(audited_pid, u64::from(outsider_pid));
    for event in run.events.iter().filter(|e| e.get("pid").is_some()) {
        assert_eq!(
            event["pid"].as_u64(),
            Some(audited_pid),
            "only the command is audited: {event}"
        );
    }
    assert!(!run.of_kind("write_fault").is_empty());
    run.assert_accounting();
}

/// A workload in `mode` (one that waits for a line on stdin), stdin and stderr piped.
fn waiting_workload(mode: &[&str]) -> std::process::Child {
    Command::new(workload())
        .args(mode)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// An agent auditing the running `pid` event by event, once it has started.
fn started_agent_for(pid: u32) -> Agent {
    let agent = Agent::start(&[
        "run",
        "--every-event",
        "--pid",
        &pid.to_string(),
        "--stats-interval",
        "0",
    ]);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    agent
}

#[test]
fn a_running_pid_is_audited_from_its_next_mapping() {
    let mut target = waiting_workload(&["wait-anon", "4"]);
    let pid = target.id();
    let agent = started_agent_for(pid);
    target.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let output = target.wait_with_output().unwrap();
    assert!(output.status.success());
    let start = common::written_start(&output);
    agent.wait_for("the process's exit", |e| {
        e["event"] == "region_unmapped" && e["pid"] == pid
    });
    let run = agent.stop();
    assert!(
        run.status.success(),
        "SIGINT ends the agent cleanly; stderr:\n{}",
        run.stderr
    );
    assert_eq!(
        run.of_kind("agent_started")[0]["scope"]["pids"],
        serde_json::json!([pid])
    );
    let faults = faults_in(&run, start, start + 4 * PAGE);
    assert_eq!(
        faults.len(),
        8,
        "4 pages written, then re-mapped and written again"
    );
    assert!(faults.iter().all(|e| e["pid"] == pid));
    run.assert_accounting();
}

#[test]
fn an_agent_restarted_while_the_target_runs_reloads_its_regions_from_proc() {
    let mut target = waiting_workload(&["map-then-wait", "4"]);
    let pid = target.id();
    let mut target_stderr = BufReader::new(target.stderr.take().unwrap()).lines();
    let mapped = target_stderr
        .find_map(|l| {
            l.unwrap()
                .strip_prefix("workload: mapped ")
                .map(|range| range.to_string())
        })
        .expect("the workload reports its region");
    let mut bounds = mapped.split_whitespace().map(hex);
    let (start, end) = (bounds.next().unwrap(), bounds.next().unwrap());
    let first = started_agent_for(pid).stop();
    assert!(first.status.success(), "stderr:\n{}", first.stderr);

    let second = started_agent_for(pid);
    target.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(target.wait().unwrap().success());
    second.wait_for("the target's exit", |e| {
        e["event"] == "region_unmapped" && e["pid"] == pid
    });
    let run = second.stop();
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    // /proc shows the kernel's VMA, which may have merged with a neighbour.
    let holds_the_mapping = |e: &&Value| {
        let (first, last) = region_range(e);
        e["origin"] == "proc" && first <= start && end <= last
    };
    let loaded = first.of_kind("region_mapped").into_iter();
    assert_eq!(loaded.filter(holds_the_mapping).count(), 1);
    let reloaded: Vec<&Value> = run
        .of_kind("region_mapped")
        .into_iter()
        .filter(holds_the_mapping)
        .collect();
    assert_eq!(reloaded.len(), 1, "the region is loaded from /proc again");
    let region_id = &reloaded[0]["region"]["id"];
    let faults = faults_in(&run, start, end);
    assert_eq!(faults.len(), 3, "the pages written after the restart");
    for fault in faults {
        assert_eq!(&fault["region"]["id"], region_id, "{fault}");
        assert_eq!(fault["pid"], pid);
        assert_eq!(stack_symbols(fault)[0], "rewrite_pages", "{fault}");
        assert_eq!(fault["exe"], workload().to_str().unwrap());
    }
    run.assert_accounting();
}

#[test]
fn a_command_name_brings_matching_processes_into_scope() {
    // A copy of the workload under a name no other test's processes have.
    let dir = tempfile::tempdir().unwrap();
    let comm = format!("comm{}", std::process::id());
    let program = dir.path().join(&comm);
    std::fs::copy(workload(), &program).unwrap();
    let agent = Agent::start(&[
        "run",
        "--every-event",
        "--comm",
        &comm,
        "--stats-interval",
        "0",
    ]);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    let outsider = Command::new(workload())
        .args(["anon", "2"])
        .output()
        .unwrap();
    let matching = Command::new(&program).args(["anon", "2"]).output().unwrap();
    assert!(outsider.status.success() && matching.status.success());
    agent.wait_for("the process's exit", |e| {
        e["event"] == "region_unmapped" && e["comm"] == comm.as_str()
    });
    let run = agent.stop();
    assert_eq!(
        run.of_kind("agent_started")[0]["scope"]["comms"],
        serde_json::json!([comm])
    );
    let faults = run.of_kind("write_fault");
    assert!(
        faults.iter().all(|e| e["comm"] == comm.as_str()),
        "only the matching process is audited"
    );
    let writes = faults
        .iter()
        .filter(|e| stack_symbols(e)[0] == "write_pages")
        .count();
    assert_eq!(writes, 2);
    run.assert_accounting();
}

#[test]
fn the_command_exit_status_becomes_the_agents() {
    let run = run_agent(&["run", "--every-event", "--", "/bin/sh", "-c", "exit 7"]);
    assert_eq!(run.status.code(), Some(7), "stderr:\n{}", run.stderr);
    assert_eq!(run.stopped()["command_exit_code"], 7);
}

#[test]
fn kernel_log_shows_the_programs_diagnostics() {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--kernel-log",
        "--",
        workload().to_str().unwrap(),
        "anon",
        "1",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let (start, end) = run.workload_range("written");
    let expected = format!("region {start:x}-{end:x} prot 3");
    assert!(
        run.stderr
            .lines()
            .any(|l| l.contains("map_audit::sys_mmap") && l.contains(&expected)),
        "aya-log line for the region in stderr:\n{}",
        run.stderr
    );
}

#[test]
fn without_kernel_log_the_programs_stay_quiet() {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        workload().to_str().unwrap(),
        "anon",
        "1",
    ]);
    assert!(run.status.success());
    assert!(
        !run.stderr.contains("map_audit::sys_mmap"),
        "{}",
        run.stderr
    );
}

#[test]
fn check_reports_the_hooks_it_would_use() {
    let out = Command::new(common::AGENT).arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("yes  tracepoint exceptions:page_fault_user"),
        "{stdout}"
    );
    assert!(
        stdout
            .contains("write faults:          raw_tracepoint:exceptions:page_fault_{user,kernel}"),
        "{stdout}"
    );
    // This project's CI kernel is built without kprobes (see platform notes), the VM
    // guests' kernels with: check must say which.
    let kprobes = if common::kernel_has_kprobes() {
        "yes  kprobe attach (kprobe_events)"
    } else {
        "no   kprobe attach (kprobe_events)"
    };
    assert!(stdout.contains(kprobes), "{stdout}");
    assert!(stdout.contains("map-audit can run on this kernel."));
}

#[test]
fn the_programs_load_with_the_cheapest_fault_hook() {
    // A verifier refusal would make the agent fall back to a costlier hook silently
    // but for a line in `agent_started`: every kernel of the matrix has raw tracepoints.
    let run = run_agent(&["run", "--", workload().to_str().unwrap(), "anon", "1"]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let started = &run.of_kind("agent_started")[0];
    let fault = started["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["role"] == "fault_user")
        .unwrap();
    assert_eq!(
        fault["hook"], "raw_tracepoint:exceptions:page_fault_user",
        "{fault}"
    );
    assert!(
        !fault["reason"].as_str().unwrap().contains("unavailable"),
        "{fault}"
    );
    assert!(run.events.iter().all(|e| e.to_string().len() < 16 * 1024));
}

#[test]
fn writes_the_kernel_does_for_the_process_are_reported_with_both_stacks() {
    let pages = 4;
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        workload().to_str().unwrap(),
        "kernel-read",
        &pages.to_string(),
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let (start, end) = run.workload_range("kernel-read");
    let faults = faults_in(&run, start, end);
    assert_eq!(
        faults.len() as u64,
        pages,
        "read() from /dev/zero faults once per page, in the kernel"
    );
    for fault in faults {
        assert_eq!(fault["access"], "kernel");
        assert_eq!(
            fault["error_code"].as_u64().unwrap() & 0x4,
            0,
            "not a user-mode access"
        );
        let user = stack_symbols(fault);
        // read_into itself is skipped: libc's read() keeps no frame pointer (platform notes).
        assert!(
            user.contains(&"kernel_read".to_string()) && user.contains(&"main".to_string()),
            "{user:?}"
        );
        let kernel: Vec<String> = fault["kernel_stack"]
            .as_array()
            .expect("a kernel stack")
            .iter()
            .map(|f| f["symbol"].as_str().unwrap_or("?").to_string())
            .collect();
        assert!(
            kernel.contains(&"vfs_read".to_string()) && kernel.contains(&"ksys_read".to_string()),
            "{kernel:?}"
        );
        assert!(
            !kernel[0].starts_with("bpf_"),
            "the tracer's own frames are dropped: {kernel:?}"
        );
    }
    run.assert_accounting();
}

#[test]
fn a_process_that_exits_right_after_its_write_is_still_symbolised() {
    // Four at once, so the agents compete for the CPUs and read /proc late.
    let runs: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(|| {
                run_agent(&[
                    "run",
                    "--every-event",
                    "--",
                    workload().to_str().unwrap(),
                    "write-and-exit",
                ])
            })
        })
        .collect();
    for run in runs {
        let run = run.join().unwrap();
        assert!(run.status.success(), "{}", run.stderr);
        let write = run
            .of_kind("write_fault")
            .into_iter()
            .find(|e| stack_symbols(e)[0] == "write_pages")
            .unwrap_or_else(|| {
                panic!(
                    "the write is symbolised: {:?}",
                    run.of_kind("write_fault")
                        .iter()
                        .map(|e| stack_symbols(e))
                        .collect::<Vec<_>>()
                )
            });
        assert!(stack_symbols(write).contains(&"main".to_string()));
        run.assert_accounting();
    }
}
