//! Every fault hook this machine offers gives the same events on the same workload
//! (the perf-event hook cannot tell writes from reads, so the regions compared are
//! only ever written);
//! the kprobe hook, which this kernel cannot attach (no CONFIG_KPROBES, see
//! platform notes), fails with one clear sentence. Real eBPF; needs root.

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

#[test]
fn raw_tracepoint_tp_btf_tracepoint_and_perf_event_give_the_same_events() {
    for (mode, key) in [
        (&["anon", "4"][..], "written"),
        (&["kernel-read", "3"][..], "kernel-read"),
    ] {
        let reference = faults("raw-tracepoint", mode, key);
        assert!(!reference.is_empty());
        for hook in ["tp-btf", "tracepoint", "perf-event"] {
            assert_eq!(
                faults(hook, mode, key),
                reference,
                "{hook} differs from the raw tracepoint on {mode:?}"
            );
        }
    }
}

#[test]
fn kprobe_hook_is_unavailable_on_this_kernel_and_says_so() {
    let run = run_agent(&["run", "--fault-hook", "kprobe", "--", "/bin/true"]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        run.stderr.starts_with("map-audit: the fault hook kprobe cannot attach on this kernel; `map-audit check` lists what can"),
        "{}",
        run.stderr
    );
    assert!(run.events.is_empty());
}
