//! Every fault hook this machine offers gives the same events on the same workload
//! (the perf-event hook cannot tell writes from reads, so the regions compared are
//! only ever written);
//! the kprobe hook gives them too where the kernel has kprobes, and fails with one
//! clear sentence where it has not (this project's CI host, see platform notes).
//! Real eBPF; needs root.

mod common;

use std::collections::BTreeSet;

use common::{hex, run_agent, stack_symbols, workload};

/// (access, innermost function, page index in the workload's region) of every write
/// fault the workload made in `key`'s region, under `hook`.
fn faults(hook: &str, mode: &[&str], key: &str) -> BTreeSet<(String, String, u64)> {
    let mut args = vec![
        "run",
        "--every-event",
        "--fault-hook",
        hook,
        "--",
        workload().to_str().unwrap(),
    ];
    args.extend_from_slice(mode);
    let run = run_agent(&args);
    assert!(run.status.success(), "{hook}: {}", run.stderr);
    run.assert_accounting();
    let hooks = &run.of_kind("agent_started")[0]["hooks"];
    assert!(
        hooks
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["role"] == "fault_user" && h["reason"] == "forced with --fault-hook")
    );
    let (start, end) = run.workload_range(key);
    run.of_kind("write_fault")
        .into_iter()
        .filter_map(|e| {
            let address = hex(e["address"].as_str().unwrap());
            (start..end).contains(&address).then(|| {
                (
                    e["access"].as_str().unwrap().to_string(),
                    stack_symbols(e)[0].clone(),
                    (address - start) / 4096,
                )
            })
        })
        .collect()
}

/// Workload modes and the region each writes: user writes, and writes the kernel
/// does for the process.
const CASES: [(&[&str], &str); 2] = [
    (&["anon", "4"], "written"),
    (&["kernel-read", "3"], "kernel-read"),
];

fn assert_same_events_as_the_raw_tracepoint(hook: &str) {
    for (mode, key) in CASES {
        let reference = faults("raw-tracepoint", mode, key);
        assert!(!reference.is_empty());
        assert_eq!(
            faults(hook, mode, key),
            reference,
            "{hook} differs from the raw tracepoint on {mode:?}"
        );
    }
}

#[test]
fn tp_btf_gives_the_raw_tracepoints_events() {
    assert_same_events_as_the_raw_tracepoint("tp-btf");
}

#[test]
fn tracepoint_gives_the_raw_tracepoints_events() {
    assert_same_events_as_the_raw_tracepoint("tracepoint");
}

#[test]
fn perf_event_gives_the_raw_tracepoints_events() {
    assert_same_events_as_the_raw_tracepoint("perf-event");
}

/// Checks `hook` against the raw tracepoint where `attachable`, else its one-sentence
/// refusal.
fn assert_same_events_or_refusal(hook: &str, attachable: bool) {
    if attachable {
        assert_same_events_as_the_raw_tracepoint(hook);
        return;
    }
    let run = run_agent(&["run", "--fault-hook", hook, "--", "/bin/true"]);
    assert_eq!(run.status.code(), Some(1));
    let sentence = format!(
        "map-audit: the fault hook {hook} cannot attach on this kernel; `map-audit check` lists what can"
    );
    assert!(run.stderr.starts_with(&sentence), "{}", run.stderr);
    assert!(run.events.is_empty());
}

/// The kprobe PMU exists only on kernels built with CONFIG_KPROBES: the VM guests of
/// `cargo xtask vm-test` have it (the events are checked there), this project's CI
/// host does not (the refusal is checked there).
#[test]
fn kprobe_gives_the_raw_tracepoints_events_or_one_sentence_without_kprobes() {
    assert_same_events_or_refusal("kprobe", common::kernel_has_kprobes());
}

/// fentry needs ftrace to offer the function: `available_filter_functions` lists it
/// in the VM guests of `cargo xtask vm-test`; on this project's CI host the file cannot
/// be read (and every trampoline attach fails with EPERM).
#[test]
fn fentry_gives_the_raw_tracepoints_events_or_one_sentence_where_ftrace_cannot() {
    let traceable = std::fs::read_to_string("/sys/kernel/tracing/available_filter_functions")
        .is_ok_and(|functions| functions.lines().any(|l| l == "handle_mm_fault"));
    assert_same_events_or_refusal("fentry", traceable);
}
