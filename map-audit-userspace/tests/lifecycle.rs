//! The agent's view of a process's writable regions, rebuilt from its events alone,
//! equals /proc/PID/maps after every kind of region operation: mmap, mprotect (and a
//! partial one that splits a region), munmap of a part, mremap, fork, pkey_mprotect,
//! exec. Needs root and BPF, like the other integration tests.

mod common;

use std::collections::BTreeSet;

use common::{Agent, hex, run_agent, stack_symbols, workload};
use serde_json::Value;

const PAGE: u64 = 4096;

/// Writable pages of one process as the events describe them.
#[derive(Default)]
struct Model {
    pages: BTreeSet<u64>,
}

impl Model {
    fn apply(&mut self, event: &Value) {
        let range = |v: &Value| {
            (
                hex(v["start"].as_str().unwrap()),
                hex(v["end"].as_str().unwrap()),
            )
        };
        let (add, (start, end)) = match event["event"].as_str().unwrap() {
            "region_mapped" => (true, range(&event["region"])),
            "region_unmapped" => (false, range(&event["range"])),
            "region_protected" => (
                event["new_prot"].as_str().unwrap().contains('w'),
                range(&event["range"]),
            ),
            _ => return,
        };
        for page in (start..end).step_by(PAGE as usize) {
            if add {
                self.pages.insert(page);
            } else {
                self.pages.remove(&page);
            }
        }
    }

    /// The writable ranges inside `[lo, hi)`, merged, as "start-end" hex strings.
    fn ranges_in(&self, lo: u64, hi: u64) -> Vec<String> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &page in self.pages.range(lo..hi) {
            match out.last_mut() {
                Some((_, end)) if *end == page => *end += PAGE,
                _ => out.push((page, page + PAGE)),
            }
        }
        out.into_iter()
            .map(|(s, e)| format!("{s:x}-{e:x}"))
            .collect()
    }
}

/// `workload: checkpoint N NAME ranges...` lines, by N.
fn checkpoints(stderr: &str) -> Vec<(u32, String, Vec<String>)> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("workload: checkpoint "))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let n = parts.next().unwrap().parse().unwrap();
            let name = parts.next().unwrap().to_string();
            (n, name, parts.map(str::to_string).collect())
        })
        .collect()
}

#[test]
fn the_agents_view_of_writable_regions_equals_proc_maps_after_every_operation() {
    let markers = tempfile::tempdir().unwrap();
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        workload().to_str().unwrap(),
        "lifecycle",
        markers.path().to_str().unwrap(),
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let workload_pid = run
        .events
        .iter()
        .find(|e| e["event"] == "region_mapped")
        .unwrap()["pid"]
        .clone();
    let arenas = [
        run.workload_range("arena"),
        run.workload_range("arena-after-exec"),
    ];
    let expected = checkpoints(&run.stderr);
    assert_eq!(expected.len(), 9, "all checkpoints ran: {expected:?}");

    let mut model = Model::default();
    let mut seen = Vec::new();
    for event in run.events.iter().filter(|e| e["pid"] == workload_pid) {
        let marker = event["event"] == "region_mapped"
            && event["region"]["path"]
                .as_str()
                .is_some_and(|p| p.contains("/step-"));
        if marker {
            let path = event["region"]["path"].as_str().unwrap();
            let n: u32 = path.rsplit("step-").next().unwrap().parse().unwrap();
            let (_, name, ranges) = expected
                .iter()
                .find(|(k, _, _)| *k == n)
                .expect("a checkpoint for the marker");
            let (lo, hi) = if n >= 100 { arenas[1] } else { arenas[0] };
            assert_eq!(
                &model.ranges_in(lo, hi),
                ranges,
                "after `{name}` the agent's view differs from /proc/PID/maps"
            );
            seen.push(n);
        }
        model.apply(event);
    }
    assert_eq!(
        seen,
        [0, 1, 2, 3, 4, 5, 6, 7, 100],
        "every checkpoint was compared"
    );

    // The split by a partial mprotect and the W^X change are reported as such.
    let protected = run.of_kind("region_protected");
    let arena = arenas[0].0;
    let range_of = |e: &Value| {
        (
            hex(e["range"]["start"].as_str().unwrap()),
            hex(e["range"]["end"].as_str().unwrap()),
        )
    };
    assert!(
        protected
            .iter()
            .any(|e| range_of(e) == (arena + 2 * PAGE, arena + 4 * PAGE) && e["new_prot"] == "r--")
    );
    assert!(
        protected
            .iter()
            .any(|e| range_of(e) == (arena, arena + 2 * PAGE) && e["new_prot"] == "rwx")
    );

    // The forked child inherited the regions: its writes are its own, in inherited regions.
    let child = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("workload: child "))
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let inherited = run
        .of_kind("region_mapped")
        .into_iter()
        .filter(|e| e["pid"] == child && e["origin"] == "fork")
        .count();
    assert!(
        inherited >= 3,
        "the child's copies of the arena's writable regions are reported"
    );
    let child_faults: Vec<_> = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|e| e["pid"] == child && stack_symbols(e)[0] == "child_writes")
        .collect();
    let addresses: BTreeSet<u64> = child_faults
        .iter()
        .map(|e| hex(e["address"].as_str().unwrap()))
        .collect();
    assert_eq!(
        addresses,
        BTreeSet::from([arena, arena + 20 * PAGE]),
        "the child's two copy-on-write faults"
    );
    run.assert_accounting();
}

#[test]
fn a_thousand_short_lived_processes_leave_no_entries_in_the_kernel_tables() {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--stats-interval",
        "0",
        "--",
        workload().to_str().unwrap(),
        "spawn",
        "1000",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    assert!(run.stderr.contains("workload: spawned 1000"));
    let counters = &run.stopped()["counters"];
    assert!(
        counters["kernel"]["scope_added"].as_u64().unwrap() >= 1000,
        "{counters}"
    );
    assert_eq!(counters["kernel"]["scope_table_full"], 0);
    run.assert_kernel_tables_empty();
    let child_writes = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|e| stack_symbols(e)[0] == "child_touch")
        .count();
    assert_eq!(
        child_writes, 500,
        "every writing child's copy-on-write fault is reported"
    );
    run.assert_accounting();
}

#[test]
fn a_target_sigkilled_mid_write_is_accounted_and_leaves_the_tables_empty() {
    let agent = Agent::start(&[
        "run",
        "--every-event",
        "--stats-interval",
        "0",
        "--",
        workload().to_str().unwrap(),
        "loop",
        "8",
        "60000",
        "200",
    ]);
    let write = agent.first("its writes", |e| e["event"] == "write_fault");
    let pid = write["pid"].as_i64().unwrap() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let mut agent = agent;
    let run = agent.wait();
    assert_eq!(
        run.status.code(),
        Some(128 + libc::SIGKILL),
        "the agent ends with the command's status; stderr:\n{}",
        run.stderr
    );
    assert_eq!(run.stopped()["command_exit_code"], 128 + libc::SIGKILL);
    run.assert_accounting();
    run.assert_kernel_tables_empty();
}
