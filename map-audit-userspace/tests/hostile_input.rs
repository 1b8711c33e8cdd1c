//! A traced process is not trusted: the names it gives its files and the code it runs
//! must come out as valid, escaped JSON lines, and what cannot be named only counts
//! (real eBPF; needs root). Every line is parsed and checked against the schema by
//! `common::Run`, so one unescaped newline fails the run.

mod common;

use common::{Run, region_range, run_agent, stack_symbols, workload};
use serde_json::Value;

fn counter(run: &Run, name: &str) -> u64 {
    run.stopped()["counters"]["agent"][name].as_u64().unwrap()
}

/// The workload's `hostile` mode in `dir`, audited event by event.
fn run_hostile_workload(dir: &str) -> Run {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        workload().to_str().unwrap(),
        "hostile",
        dir,
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    run
}

fn faults_with_path<'a>(run: &'a Run, path: &str) -> Vec<&'a Value> {
    run.of_kind("write_fault")
        .into_iter()
        .filter(|e| e["region"]["path"] == path)
        .collect()
}

#[test]
fn file_names_with_newlines_quotes_invalid_utf8_and_4k_paths_come_out_as_valid_json() {
    let dir = tempfile::tempdir().unwrap();
    let dir_name = dir.path().to_str().unwrap();
    let run = run_hostile_workload(dir_name);

    // Invalid UTF-8 is replaced (U+FFFD), everything else escaped and kept.
    for name in ["new\nline", "quo\"te\\back", "bad\u{fffd}\u{fffd}utf8"] {
        let path = format!("{dir_name}/{name}");
        let faults = faults_with_path(&run, &path);
        assert_eq!(faults.len(), 1, "one page written in {path:?}");
        assert_eq!(stack_symbols(faults[0])[0], "write_shared_pages");
    }

    // 19 directories of 200-byte names: each name is cut to 63 bytes and marked, and
    // the kernel's 16-level walk stops short of the mount root.
    let deep: Vec<&Value> = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|e| {
            e["region"]["path"]
                .as_str()
                .is_some_and(|p| p.ends_with("/deep-file"))
        })
        .collect();
    assert_eq!(deep.len(), 1, "the deep file was written once");
    let path = deep[0]["region"]["path"].as_str().unwrap();
    let cut_level = format!("/{}.../", "d".repeat(63));
    assert!(
        path.starts_with("...") && path.contains(&cut_level),
        "deep path marked as cut: {path}"
    );
    assert!(counter(&run, "paths_truncated") >= 1);
    run.assert_accounting();
}

#[test]
fn frames_in_mapped_files_that_are_not_elf_or_truncated_elf_count_as_unsymbolized() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_hostile_workload(dir.path().to_str().unwrap());
    for key in ["foreign-code", "truncated-elf"] {
        let written = run.workload_range(key);
        let faults: Vec<&Value> = run
            .of_kind("write_fault")
            .into_iter()
            .filter(|e| region_range(e) == written)
            .collect();
        assert_eq!(faults.len(), 1, "one write through {key}");
        let symbols = stack_symbols(faults[0]);
        assert_eq!(symbols[0], "written_through_foreign_code");
        assert_eq!(symbols[1], "?", "{key} has no symbol: {symbols:?}");
        assert_eq!(
            faults[0]["stack"][1]["module"],
            format!("{}/{key}", dir.path().to_str().unwrap())
        );
        assert_eq!(
            symbols[2], "call_through_file_code",
            "the walk goes on past it"
        );
        assert!(symbols.contains(&"main".to_string()));
    }
    assert!(counter(&run, "frames_unsymbolized") >= 2);
    run.assert_accounting();
}
