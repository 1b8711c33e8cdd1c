//! A process whose program exists only in its own mount namespace (as in a container)
//! gets its frames named as on the host: the agent reads the file through the
//! process's `/proc/PID/map_files/` while it lives, not through the path, which names
//! nothing on the host.

mod common;

use std::{path::Path, sync::OnceLock};

use common::{c_workload, run_agent, stack_symbols};
use serde_json::Value;

/// `workload.c` built the way distributions build (-O2, no frame pointers).
fn program() -> &'static Path {
    static BUILT: OnceLock<std::path::PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        c_workload(
            "MAP_AUDIT_TEST_WORKLOAD_O2",
            "workload.c",
            "workload-o2",
            &["-O2", "-g"],
        )
    })
}

/// The first 4-page aggregate (`write_pages`) of `PROGRAM wait-anon 4` run by `shell` (a `sh -c`
/// script in which `$PROG` is the program to run). The program waits a second before
/// writing: a program's first instants can beat its unwind table (issue 13).
fn anon_write(wrapper: &[&str], shell: &str) -> Value {
    let script = format!("{shell} && (sleep 1; echo go) | \"$PROG\" wait-anon 4");
    let source = format!("PROG_SRC={}", program().display());
    let mut args = vec!["run", "--"];
    args.extend_from_slice(wrapper);
    args.extend(["env", &source]);
    args.extend(["sh", "-c", &script]);
    let run = run_agent(&args);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    run.assert_accounting();
    run.of_kind("write_fault")
        .into_iter()
        .find(|e| e["count"] == 4 && e["region"]["path"].is_null())
        .unwrap_or_else(|| panic!("no 4-page aggregate; stderr:\n{}", run.stderr))
        .clone()
}

#[test]
fn a_program_only_in_another_mount_namespace_has_its_frames_named() {
    let dir = tempfile::tempdir().unwrap();
    let hidden = dir.path().join("prog");
    // A tmpfs mounted in the new namespace only: on the host, `hidden` does not exist.
    let inside = anon_write(
        &["unshare", "--mount", "--propagation", "private"],
        &format!(
            "mount -t tmpfs none {dir} && cp \"$PROG_SRC\" {hidden} && PROG={hidden}",
            dir = dir.path().display(),
            hidden = hidden.display()
        ),
    );
    assert!(!hidden.exists(), "the program is visible on the host");
    let on_host = anon_write(&[], "PROG=\"$PROG_SRC\"");

    let symbols = stack_symbols(&inside);
    assert_eq!(symbols, stack_symbols(&on_host), "{inside}\n{on_host}");
    assert_eq!(symbols[..3], ["write_pages", "anon", "main"], "{inside}");
    assert_eq!(inside["stack_end"], "complete", "{inside}");
    let program_frames: Vec<&Value> = inside["stack"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["module"] == hidden.to_str().unwrap())
        .collect();
    assert!(
        program_frames.len() >= 3,
        "frames name the program as the process sees it: {inside}"
    );
    for frame in inside["stack"].as_array().unwrap() {
        assert!(frame["symbol"].is_string(), "an unnamed frame: {inside}");
    }
}
