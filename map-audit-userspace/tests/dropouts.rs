//! Nothing audited drops out silently: processes whose main thread ends first, races
//! between threads editing one address range, forks, execs, the heap and the program's
//! globals. Each test runs a workload of `tests/workloads/dropouts.c` (built `-O2`)
//! under the real agent and checks the exact fault counts the workload reports, and
//! that produced = delivered + counted losses.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::{Agent, Run, dropouts_workload, hex, region_range, run_agent};

/// The race workloads' agent: a 64 MiB ring buffer (the default is 16), so that a
/// debug-built agent on a busy 2-core machine running the other tests of this file
/// falls behind 160,000 faults without losing records (losses would be counted, and
/// `assert_writes_reported` accepts counted ones, but then the race went untested).
const RACE_AGENT: &[&str] = &["--ringbuf-size", "67108864"];

fn run_workload(agent_args: &[&str], workload_args: &[&str]) -> Run {
    let mut args = vec!["run"];
    args.extend_from_slice(agent_args);
    args.push("--");
    args.push(dropouts_workload().to_str().unwrap());
    args.extend_from_slice(workload_args);
    let run = run_agent(&args);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    run.assert_accounting();
    run.assert_kernel_tables_empty();
    run
}

#[test]
fn a_process_whose_main_thread_exits_first_stays_audited() {
    // main calls pthread_exit; a worker then maps and writes 5 pages.
    let run = run_workload(&[], &["pthread-exit"]);
    let range = run.workload_range("after-main-exit");
    assert_eq!(
        run.faults_in(range, Some("touch_pages")),
        5,
        "{}",
        run.stderr
    );
}

#[test]
fn a_process_exec_d_by_a_non_main_thread_stays_audited() {
    // The kernel kills the old main thread; the new image maps and writes 4 pages.
    let run = run_workload(&[], &["thread-exec"]);
    let range = run.workload_range("after-thread-exec");
    assert_eq!(
        run.faults_in(range, Some("touch_pages")),
        4,
        "{}",
        run.stderr
    );
}

#[test]
fn the_brk_heap_is_audited() {
    let run = run_workload(&[], &["sbrk", "8"]);
    let range = run.workload_range("heap");
    assert_eq!(run.faults_in(range, Some("touch_pages")), 8);
    let heap = run
        .of_kind("region_mapped")
        .into_iter()
        .find(|e| e["origin"] == "brk")
        .expect("the heap is reported mapped");
    assert!(
        heap["region"]["flags"]
            .as_array()
            .unwrap()
            .contains(&"heap".into())
    );
    let (start, end) = region_range(heap);
    assert!(start <= range.0 && range.1 <= end, "{heap}");
    run.assert_regions_close_once();
}

#[test]
fn the_programs_globals_and_stack_are_audited() {
    let run = run_workload(&[], &["bss"]);
    let range = run.workload_range("bss");
    assert_eq!(run.faults_in(range, Some("touch_pages")), 16);
    let bss = run
        .of_kind("region_mapped")
        .into_iter()
        .find(|e| {
            let (start, end) = region_range(e);
            e["origin"] == "exec" && start <= range.0 && range.1 <= end
        })
        .expect("the .bss mapping is reported mapped at exec");
    assert_eq!(bss["region"]["prot"], "rw-");
    run.assert_regions_close_once();

    // 512 pages (2 MiB) below main's frame: beyond the stack's first 132 KiB.
    let run = run_workload(&[], &["stack", "512"]);
    let range = run.workload_range("stack");
    assert_eq!(run.faults_in(range, Some("write_deep_stack")), 512 - 64);
}

#[test]
fn a_program_started_under_comm_has_its_globals_audited() {
    // The process joins at exec (its new name matches), not at its first mmap: the
    // .bss that exec mapped is tracked too.
    let program = dropouts_workload();
    let comm: String = program
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .take(15)
        .collect();
    let agent = Agent::start(&["run", "--comm", &comm]);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    let workload = Command::new(program).arg("bss").output().unwrap();
    assert!(workload.status.success());
    let run = agent.stop();
    run.assert_accounting();
    let stderr = String::from_utf8_lossy(&workload.stderr);
    let range = stderr
        .lines()
        .find_map(|l| l.strip_prefix("workload: bss "))
        .map(|r| {
            let mut parts = r.split_whitespace().map(hex);
            (parts.next().unwrap(), parts.next().unwrap())
        })
        .unwrap_or_else(|| panic!("no bss line in {stderr}"));
    assert_eq!(run.faults_in(range, Some("touch_pages")), 16);
}

#[test]
fn threads_reusing_each_others_addresses_lose_no_write() {
    // Two threads map, write and unmap 4 pages 20,000 times each: one thread's munmap
    // and the other's mmap of the same range race at their system-call exits.
    let run = run_workload(RACE_AGENT, &["reuse-race", "20000"]);
    run.assert_writes_reported("touch_pages", run.workload_number("writes"));
    run.assert_regions_close_once();
}

#[test]
fn a_region_split_under_a_writer_loses_no_write() {
    // One thread rewrites half a region 3,000 times; another splits the other half
    // with mprotect, back and forth, meanwhile.
    let run = run_workload(RACE_AGENT, &["split-race", "3000"]);
    run.assert_writes_reported("touch_pages", run.workload_number("writes"));
    run.assert_regions_close_once();
}

#[test]
fn a_partly_unmapped_region_keeps_counting() {
    // One thread rewrites half a region 3,000 times; another unmaps the other half
    // page by page meanwhile (each a partial unmap of the region being counted).
    let run = run_workload(RACE_AGENT, &["unmap-race", "3000"]);
    run.assert_writes_reported("touch_pages", run.workload_number("writes"));
    run.assert_regions_close_once();
}

#[test]
fn a_forked_childs_writes_are_in_its_own_regions() {
    // 200 children write an inherited MAP_SHARED file right after their fork, before
    // the agent has copied the parent's regions: each write belongs to the child's
    // copy (its id, its path), not to the parent's region.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared");
    let run = run_workload(&[], &["fork-many", "200", file.to_str().unwrap()]);
    let range = run.workload_range("shared");
    let parent = run.of_kind("region_mapped")[0]["pid"].clone();
    let mut children = std::collections::HashSet::new();
    for fault in run.of_kind("write_fault") {
        if fault["pid"] == parent
            || !(range.0..range.1).contains(&hex(fault["address"].as_str().unwrap()))
        {
            continue;
        }
        children.insert(fault["pid"].clone());
        let own = run
            .of_kind("region_mapped")
            .into_iter()
            .any(|m| m["pid"] == fault["pid"] && m["region"]["id"] == fault["region"]["id"]);
        assert!(
            own,
            "a child's write in a region it has no region_mapped for: {fault}"
        );
        assert_eq!(fault["region"]["path"], file.to_str().unwrap(), "{fault}");
    }
    assert_eq!(children.len(), 200, "every child's writes are reported");
    assert_eq!(run.faults_by("touch_pages"), 600);
}

#[test]
fn exec_leaves_nothing_of_the_old_image_over_the_new_one() {
    // 32 one-page regions at every other page of a range, then exec, and the new image
    // maps the whole range at once and writes it.
    let run = run_workload(&[], &["exec-shadow"]);
    let range = run.workload_range("after-exec-shadow");
    assert_eq!(run.faults_in(range, Some("retouch_pages")), 64);
}

#[test]
fn an_mprotect_that_changes_nothing_splits_nothing() {
    // 301 regions side by side; one mprotect with the protection they already have
    // over more regions than the kernel's walk takes, so the agent finishes it.
    let run = run_workload(&[], &["same-prot", "300"]);
    assert!(
        run.stopped()["counters"]["kernel"]["ranges_handed_to_agent"]
            .as_u64()
            .unwrap()
            > 0
    );
    run.assert_regions_close_once();
    assert_eq!(run.faults_by("touch_pages"), 2);
}

#[test]
fn each_flush_interval_has_its_own_first_fault() {
    // Page 0 written by thread "first", emptied, then written by thread "second" 1.5 s
    // later: the second interval's aggregate is that one write, by that thread.
    let run = run_workload(&["--flush-interval", "0.5"], &["interval-page", "1500"]);
    let parts: Vec<_> = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|e| e["stack"][0]["symbol"] == "touch_pages")
        .collect();
    assert_eq!(parts.len(), 2, "{parts:?}");
    let second_tid = run.workload_number("tid-second");
    assert_eq!(parts[1]["tid"], second_tid, "{}", parts[1]);
    assert_eq!(parts[1]["comm"], "second");
    assert_eq!(
        (parts[1]["count"].as_u64(), parts[1]["pages"].as_u64()),
        (Some(1), Some(1))
    );
    assert!(parts[0]["last_ts"].as_str() < parts[1]["first_ts"].as_str());
}

/// Starts the churn workload (maps a region every 100 us, keeps them all) and an agent
/// with `scope` while it churns; then has it rewrite every region from `retouch_pages`.
/// Returns the run, the rewrites made and the faults reported for them.
fn attach_while_mapping(scope: &[&str]) -> (Run, u64, u64) {
    let mut workload = Command::new(dropouts_workload())
        .args(["churn", "2500"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = workload.id().to_string();
    thread::sleep(Duration::from_millis(300));
    let mut args = vec!["run"];
    let scope: Vec<&str> = scope
        .iter()
        .map(|s| if *s == "PID" { pid.as_str() } else { s })
        .collect();
    args.extend_from_slice(&scope);
    let agent = Agent::start(&args);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    // Still churning for ~2 s: all of it audited from here.
    thread::sleep(Duration::from_millis(2500));
    workload.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let output = workload.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let writes = stderr
        .lines()
        .find_map(|l| l.strip_prefix("workload: writes "))
        .unwrap_or_else(|| panic!("no writes line: {stderr}"))
        .parse()
        .unwrap();
    let run = agent.stop();
    run.assert_accounting();
    // Only this workload's: another test's may run under the same name meanwhile.
    let reported = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|e| {
            e["pid"].as_u64() == pid.parse().ok() && e["stack"][0]["symbol"] == "retouch_pages"
        })
        .map(|e| e["count"].as_u64().unwrap())
        .sum();
    (run, writes, reported)
}

#[test]
fn a_process_mapping_while_the_agent_starts_stays_audited_by_comm() {
    let name = dropouts_workload().file_name().unwrap().to_str().unwrap();
    let comm = &name[..name.len().min(15)];
    let (_, writes, reported) = attach_while_mapping(&["--comm", comm]);
    assert_eq!(reported, writes);
}

#[test]
fn a_process_mapping_while_the_agent_starts_stays_audited_by_pid() {
    let (_, writes, reported) = attach_while_mapping(&["--pid", "PID"]);
    assert_eq!(reported, writes);
}

#[test]
fn comm_matches_any_thread_of_a_running_process() {
    // The process is named "dropouts"; one of its threads "ma-writer". Its region was
    // mapped before the agent started.
    let mut workload = Command::new(dropouts_workload())
        .args(["named-thread", "ma-writer"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(workload.stderr.take().unwrap());
    let mut lines = String::new();
    while !lines.contains("waiting") {
        std::io::BufRead::read_line(&mut stderr, &mut lines).unwrap();
    }
    let agent = Agent::start(&["run", "--comm", "ma-writer"]);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    workload.stdin.take().unwrap().write_all(b"go\n").unwrap();
    workload.wait().unwrap();
    let run = agent.stop();
    run.assert_accounting();
    let range = lines
        .lines()
        .find_map(|l| l.strip_prefix("workload: named "))
        .map(|r| {
            let mut parts = r.split_whitespace().map(hex);
            (parts.next().unwrap(), parts.next().unwrap())
        })
        .unwrap();
    assert_eq!(run.faults_in(range, Some("retouch_pages")), 6);
}

#[test]
fn a_full_region_table_is_counted_for_the_agents_own_inserts() {
    // A process with ~200 regions, loaded from /proc into a table of 64 entries.
    let mut workload = Command::new(dropouts_workload())
        .args(["churn", "100"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_millis(400));
    let pid = workload.id().to_string();
    let agent = Agent::start(&["run", "--pid", &pid, "--region-table-size", "64"]);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    workload.stdin.take().unwrap().write_all(b"go\n").unwrap();
    workload.wait().unwrap();
    let run = agent.stop();
    let agent_counters = &run.stopped()["counters"]["agent"];
    assert!(
        agent_counters["region_blocks_not_inserted"]
            .as_u64()
            .unwrap()
            > 0,
        "{agent_counters}"
    );
}

#[test]
fn a_huge_page_mapping_is_tracked_over_its_whole_huge_page() {
    // mmap rounds MAP_HUGETLB lengths up to the huge page (2 MiB), not to 4 KiB; a
    // write 1 MiB in is inside the region. Needs reserved huge pages: the test sets
    // vm.nr_hugepages (root) and puts the old value back.
    let sysctl = "/proc/sys/vm/nr_hugepages";
    let before = std::fs::read_to_string(sysctl).unwrap();
    std::fs::write(sysctl, "2").unwrap();
    let run = run_agent(&[
        "run",
        "--",
        dropouts_workload().to_str().unwrap(),
        "hugetlb",
    ]);
    std::fs::write(sysctl, before.trim()).unwrap();
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    run.assert_accounting();
    let (start, end) = run.workload_range("huge");
    let region = run
        .of_kind("region_mapped")
        .into_iter()
        .find(|e| region_range(e).0 == start)
        .expect("the huge page mapping is reported");
    assert_eq!(region_range(region), (start, end), "{region}");
    run.assert_regions_close_once();
}
