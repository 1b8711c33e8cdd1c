//! User stacks in code built the way users build it, checked against perf's DWARF
//! unwinder on the same program: `perf record -e exceptions:page_fault_user
//! --call-graph dwarf` (linux-perf, installed by `cargo xtask test`), the faults into
//! the workload's MAP_SHARED file compared stack by stack.
//!
//! perf is the oracle with three known gaps, each seen here and allowed for by name:
//! it drops `__libc_start_main_impl` (it looks up a return address without stepping
//! back into the call, and glibc's call to the noreturn `__libc_start_call_main` is the
//! function's last instruction), `raise` under a signal handler, the first frame of
//! some libc string functions, and libc's `clock_gettime` under the vDSO (which it
//! prints as `(inlined)` although the call into the vDSO is a real call); it also puts a kernel symbol (`__traceiter_*`) on top of
//! some user stacks. Everything else must match frame for frame, in order, and every
//! stack of ours must be complete.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

use common::{Agent, Run, hex, run_agent};
use serde_json::Value;

/// Frames perf is known to leave out (see above).
const PERF_OMITS: [&str; 4] = [
    "__libc_start_main_impl",
    "__GI___clock_gettime",
    "__GI_raise",
    "raise",
];

/// libc's memcpy/memmove, whose first frame perf leaves out; glibc picks the variant by
/// CPU (`__memcpy_avx_unaligned_erms`, `__memmove_avx512_unaligned_erms` on a CPU with
/// AVX-512, as a CI machine had).
fn perf_omits(symbol: &str) -> bool {
    PERF_OMITS.contains(&symbol)
        || ["__memcpy_", "__memmove_"]
            .iter()
            .any(|p| symbol.starts_with(p) && symbol.contains("_unaligned"))
}

type Chain = Vec<String>;

fn workloads_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads")
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("unwinding-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Builds `source` with `compiler` and `flags` into `name` (once per test binary).
fn build(name: &str, compiler: &str, source: &str, flags: &[&str]) -> PathBuf {
    let out = out_dir().join(name);
    if out.exists() {
        return out;
    }
    let status = Command::new(compiler)
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(workloads_dir().join(source))
        .status()
        .unwrap_or_else(|e| panic!("{compiler} runs: {e}"));
    assert!(status.success(), "building {name} failed");
    out
}

fn c_program(name: &str, flags: &[&str]) -> PathBuf {
    let mut all = vec!["-O2", "-g", "-pthread"];
    all.extend_from_slice(flags);
    build(name, "gcc", "unwinding.c", &all)
}

/// What perf is known to get wrong, and how C++ and Rust names differ between the two
/// symbolisers (parameter lists, `[clone .cold]`).
fn normalise(symbol: Option<&str>) -> Option<String> {
    let symbol = match symbol {
        None | Some("[unknown]") => return Some("?".into()),
        Some(s) => s,
    };
    if symbol.starts_with("__traceiter_") || symbol.ends_with("exc_page_fault") {
        return None;
    }
    // The vDSO exports each entry twice (`clock_gettime`, `__vdso_clock_gettime`).
    let symbol = symbol.strip_prefix("__vdso_").unwrap_or(symbol);
    let mut name = symbol.split(" [clone").next().unwrap().to_string();
    if name.ends_with(')')
        && let Some(open) = name.find('(')
    {
        name.truncate(open);
    }
    Some(name)
}

/// The workload's `workload: target START END` line.
fn target_range(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("workload: target "))
        .unwrap_or_else(|| panic!("no target line in:\n{stderr}"));
    let mut parts = line.split_whitespace().map(hex);
    (parts.next().unwrap(), parts.next().unwrap())
}

/// The agent's stacks of the writes into the target, and whether all are complete.
fn agent_chains(program: &Path, args: &[&str]) -> (Vec<Chain>, Vec<String>) {
    agent_chains_with(&[], program, args)
}

/// `agent_chains`, with more of the agent's options.
fn agent_chains_with(options: &[&str], program: &Path, args: &[&str]) -> (Vec<Chain>, Vec<String>) {
    let file = out_dir().join(format!(
        "target-{}",
        program.file_name().unwrap().to_string_lossy()
    ));
    let mut cmd = vec!["run", "--every-event"];
    cmd.extend_from_slice(options);
    cmd.extend_from_slice(&["--", program.to_str().unwrap(), file.to_str().unwrap()]);
    cmd.extend_from_slice(args);
    let run = run_agent(&cmd);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    run.assert_accounting();
    chains_in(&run, target_range(&run.stderr))
}

/// The stacks of `run`'s writes into `[start, end)`, and how each ended.
fn chains_in(run: &Run, (start, end): (u64, u64)) -> (Vec<Chain>, Vec<String>) {
    let mut chains = Vec::new();
    let mut ends = Vec::new();
    for fault in run.of_kind("write_fault") {
        if !(start..end).contains(&hex(fault["address"].as_str().unwrap())) {
            continue;
        }
        chains.push(chain_of(fault));
        ends.push(fault["stack_end"].as_str().unwrap().to_string());
    }
    (chains, ends)
}

/// The symbols of an event's stack, inlined frames left out (perf's way).
fn chain_of(fault: &Value) -> Chain {
    fault["stack"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["inlined"] == false)
        .filter_map(|f| normalise(f["symbol"].as_str()))
        .collect()
}

/// perf's stacks of the writes into the target. perf drops samples when its reader
/// falls behind (8 KiB of stack per sample, other suites running in parallel: a CI run
/// once got none of the target's): it records write faults only, into a larger buffer,
/// and a run that saw none of the target's writes is repeated, at most three times.
fn perf_chains(program: &Path, args: &[&str]) -> Vec<Chain> {
    for _ in 0..3 {
        let chains = perf_chains_once(program, args);
        if !chains.is_empty() {
            return chains;
        }
    }
    Vec::new()
}

fn perf_chains_once(program: &Path, args: &[&str]) -> Vec<Chain> {
    let data = out_dir().join(format!(
        "perf-{}.data",
        program.file_name().unwrap().to_string_lossy()
    ));
    let file = out_dir().join(format!(
        "perf-target-{}",
        program.file_name().unwrap().to_string_lossy()
    ));
    let record = Command::new("perf")
        .args([
            "record",
            "-q",
            "-e",
            "exceptions:page_fault_user",
            "--filter",
            "error_code & 2",
            "--mmap-pages",
            "1024",
            "--call-graph",
            "dwarf",
            "-o",
        ])
        .arg(&data)
        .arg("--")
        .arg(program)
        .arg(&file)
        .args(args)
        .output()
        .expect("perf runs (linux-perf)");
    let stderr = String::from_utf8_lossy(&record.stderr);
    assert!(record.status.success(), "perf record failed:\n{stderr}");
    let (start, end) = target_range(&stderr);
    let script = Command::new("perf")
        .args(["script", "-F", "trace,ip,sym", "-i"])
        .arg(&data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&script.stdout);
    let mut chains = Vec::new();
    for sample in text.split("\n\n") {
        let mut lines = sample.lines().filter(|l| !l.trim().is_empty());
        let Some(head) = lines.next() else {
            continue;
        };
        let field = |name: &str| {
            head.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(hex)
        };
        let (Some(address), Some(error_code)) = (field("address="), field("error_code=")) else {
            continue;
        };
        if !(start..end).contains(&address) || error_code & 2 == 0 {
            continue;
        }
        let chain: Chain = lines
            .filter_map(|l| {
                let symbol = l.trim().split_once(' ').map(|(_, s)| s.trim());
                if symbol.is_some_and(|s| s.ends_with("(inlined)")) {
                    return None;
                }
                normalise(symbol)
            })
            .collect();
        chains.push(chain);
    }
    chains
}

/// Checks every stack of ours against perf's: the same stacks, frame for frame, but
/// for the frames perf is known to leave out.
fn assert_matches_perf(program: &Path, args: &[&str]) {
    let (ours, ends) = agent_chains(program, args);
    assert_same_as_perf(ours, &ends, perf_chains(program, args));
}

fn assert_same_as_perf(ours: Vec<Chain>, ends: &[String], theirs: Vec<Chain>) {
    assert!(!ours.is_empty(), "map-audit saw no writes into the target");
    assert!(!theirs.is_empty(), "perf saw no writes into the target");
    assert!(
        ends.iter().all(|e| e == "complete"),
        "stacks not complete: {ends:?} {ours:?}"
    );
    let without_omissions =
        |chain: &Chain| -> Chain { chain.iter().filter(|s| !perf_omits(s)).cloned().collect() };
    let mut ours: Vec<Chain> = ours.iter().map(without_omissions).collect();
    let mut theirs: Vec<Chain> = theirs.iter().map(without_omissions).collect();
    ours.sort();
    ours.dedup();
    theirs.sort();
    theirs.dedup();
    assert_eq!(
        ours, theirs,
        "map-audit's stacks (left) and perf's (right) differ"
    );
}

#[test]
fn c_built_o2_without_frame_pointers_matches_perf() {
    assert_matches_perf(&c_program("c-o2", &[]), &["chain"]);
}

#[test]
fn faults_at_one_pc_and_stack_pointer_under_two_callers_count_under_each_stack() {
    // In the default mode the kernel counts a fault with the stack of the last fault
    // at the same pc and stack pointer (`stack_memo`) only while the stack words that
    // walk read are unchanged: here only the return address differs, four faults at a
    // time, twice.
    let program = c_program("c-o2", &[]);
    let file = out_dir().join("target-two-callers");
    let run = run_agent(&[
        "run",
        "--flush-interval",
        "3600",
        "--",
        program.to_str().unwrap(),
        file.to_str().unwrap(),
        "two-callers",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    run.assert_accounting();
    let (start, end) = target_range(&run.stderr);
    let mut counts = std::collections::BTreeMap::<Chain, u64>::new();
    for fault in run.of_kind("write_fault") {
        if (start..end).contains(&hex(fault["address"].as_str().unwrap())) {
            assert_eq!(fault["stack_end"], "complete", "{fault}");
            *counts.entry(chain_of(fault)).or_default() += fault["count"].as_u64().unwrap();
        }
    }
    let ours: Vec<Chain> = counts.keys().cloned().collect();
    let ends = vec!["complete".to_string(); ours.len()];
    assert_same_as_perf(ours, &ends, perf_chains(&program, &["two-callers"]));
    assert_eq!(counts.len(), 2, "one stack per caller: {counts:?}");
    assert!(
        counts.values().all(|&count| count == 8),
        "eight writes under each caller's stack: {counts:?}"
    );
    let recalled = run.stopped()["counters"]["kernel"]["stacks_recalled"].clone();
    assert!(
        recalled.as_u64().is_some_and(|n| n > 0),
        "repeats counted without a walk: {recalled}"
    );
}

#[test]
fn c_with_frame_pointers_and_frameless_leaves_matches_perf() {
    // GCC leaves leaf functions frameless even with frame pointers: the caller of
    // `leaf_store` used to be skipped.
    assert_matches_perf(
        &c_program("c-o2-fp", &["-fno-omit-frame-pointer"]),
        &["chain"],
    );
}

#[test]
fn writes_made_by_libc_match_perf() {
    // memset and memcpy (libc has no frame pointers) writing into the mapping.
    assert_matches_perf(&c_program("c-o2-builtins", &["-fno-builtin"]), &["libc"]);
}

#[test]
fn a_thread_writer_ends_at_clone3_and_matches_perf() {
    let program = c_program("c-o2-thread", &[]);
    assert_matches_perf(&program, &["thread"]);
    let (ours, _) = agent_chains(&program, &["thread"]);
    assert!(
        ours.iter()
            .all(|c| c.last().map(String::as_str) == Some("clone3")),
        "{ours:?}"
    );
}

#[test]
fn forked_children_writing_before_the_agent_copies_their_regions_match_perf() {
    // Each child's fresh mapping is its own region; its code is only in its parent's
    // regions until the agent copies them, and the walk must find it there.
    assert_matches_perf(&c_program("c-o2", &[]), &["fork"]);
}

#[test]
fn the_older_kernels_object_walks_the_same_stacks_as_perf() {
    // The object for 5.10 to 5.16, forced: its bounded loops over global-function
    // steps, its ids, lock and user registers give the same stacks (its exec-time walk
    // is the 5.17 object's here: this kernel has no VMA list).
    let program = c_program("c-o2", &[]);
    for mode in ["chain", "fork", "libc"] {
        let (ours, ends) = agent_chains_with(&["--ebpf-object", "linux5-10"], &program, &[mode]);
        assert_same_as_perf(ours, &ends, perf_chains(&program, &[mode]));
    }
}

#[test]
fn a_writer_in_a_signal_handler_matches_perf() {
    // Through the kernel's signal frame (`__restore_rt`) back to the interrupted code.
    assert_matches_perf(&c_program("c-o2-signal", &[]), &["signal"]);
}

#[test]
fn a_writer_in_the_vdso_matches_perf() {
    // The vDSO's frame is named from the agent's copy of it, module `[vdso]`.
    let program = c_program("c-o2-vdso", &[]);
    assert_matches_perf(&program, &["vdso"]);
    let (ours, _) = agent_chains(&program, &["vdso"]);
    assert!(
        ours.iter()
            .all(|c| c.first().map(String::as_str) == Some("clock_gettime")),
        "{ours:?}"
    );
}

#[test]
fn a_library_loaded_with_dlopen_matches_perf() {
    let plugin = build(
        "libdlopen-plugin.so",
        "gcc",
        "dlopen_plugin.c",
        &["-O2", "-g", "-shared", "-fPIC"],
    );
    let host = build("dlopen-host", "gcc", "dlopen_host.c", &["-O2", "-g"]);
    assert_matches_perf(&host, &[plugin.to_str().unwrap()]);
}

#[test]
fn a_non_pie_program_matches_perf() {
    assert_matches_perf(&c_program("c-o2-no-pie", &["-no-pie"]), &["chain"]);
}

#[test]
fn a_stripped_program_matches_perf() {
    // .eh_frame survives strip; the names of its functions do not (both say "?").
    let built = c_program("c-o2-for-strip", &[]);
    let stripped = out_dir().join("c-o2-stripped");
    let status = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(&built)
        .status()
        .unwrap();
    assert!(status.success());
    assert_matches_perf(&stripped, &["chain"]);
}

#[test]
fn cpp_built_o2_with_exceptions_matches_perf() {
    let program = build("cpp-o2", "g++", "unwinding.cpp", &["-O2", "-g"]);
    assert_matches_perf(&program, &[]);
}

#[test]
fn a_rust_release_build_matches_perf() {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let program = BUILT.get_or_init(|| {
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        build(
            "rust-release",
            &rustc,
            "unwinding.rs",
            &["-O", "-g", "--edition", "2024"],
        )
    });
    assert_matches_perf(program, &[]);
}

#[test]
fn the_dynamic_loaders_own_writes_end_complete_at_its_entry_point() {
    // ld.so's `_start` is assembly without CFI: its stacks used to end there as
    // `no_unwind_info`, about 20 lines at every program start.
    let program = c_program("c-o2", &[]);
    let target = out_dir().join("target-loader");
    let run = run_agent(&[
        "run",
        "--",
        program.to_str().unwrap(),
        target.to_str().unwrap(),
        "chain",
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let loader: Vec<_> = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|fault| {
            fault["stack"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["symbol"] == "_dl_start")
        })
        .collect();
    assert!(!loader.is_empty(), "no write of the loader's own");
    for fault in loader {
        let stack = fault["stack"].as_array().unwrap();
        assert_eq!(fault["stack_end"], "complete", "{fault}");
        assert_eq!(stack.last().unwrap()["symbol"], "_start", "{fault}");
    }
}

#[test]
fn a_program_a_shell_execs_matches_perf_from_its_first_write() {
    // Started by a shell, not by the agent: no table is built before it runs, and it
    // writes (the loader first) before the agent has read its exec's records. The
    // kernel sends those faults with a copy of their stack; the agent finishes them.
    let program = c_program("c-o2-exec", &[]);
    let agent = Agent::start(&["run", "--every-event", "--comm", "c-o2-exec"]);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    let file = out_dir().join("target-exec");
    let out = Command::new("sh")
        .args(["-c", r#"exec "$0" "$1" chain"#])
        .arg(&program)
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let (start, end) = target_range(&stderr);
    agent.wait_for("a write into the target", |e| {
        e["event"] == "write_fault"
            && e["address"]
                .as_str()
                .is_some_and(|a| (start..end).contains(&hex(a)))
    });
    let run = agent.stop();
    run.assert_accounting();
    let counters = &run.stopped()["counters"];
    assert!(
        counters["kernel"]["stack_snapshots"].as_u64().unwrap() > 0,
        "no stack went to the agent to finish: {counters}"
    );
    assert!(
        counters["agent"]["stacks_finished_by_agent"]
            .as_u64()
            .unwrap()
            > 0,
        "{counters}"
    );
    let (ours, ends) = chains_in(&run, (start, end));
    assert_same_as_perf(ours, &ends, perf_chains(&program, &["chain"]));
}
