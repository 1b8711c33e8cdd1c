//! Bad input: one clear sentence on stderr, a non-zero exit, no panic.

mod common;

use std::{os::unix::process::CommandExt, process::Command};

use common::AGENT;

fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(AGENT)
        .args(args)
        .output()
        .expect("the agent runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "no panic: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "nothing on stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.code().expect("exited, not killed"), stderr)
}

#[test]
fn an_unknown_pid_is_one_sentence_and_exit_1() {
    let (code, stderr) = run(&["run", "--pid", "999999999"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "map-audit: no process has pid 999999999; check it with `ps -p 999999999`"
    );
}

#[test]
fn a_malformed_flag_value_is_a_usage_error() {
    let (code, stderr) = run(&["run", "--pid", "12ab"]);
    assert_eq!(code, 2);
    assert!(
        stderr.starts_with("error: invalid value '12ab' for '--pid <PID>'"),
        "{stderr}"
    );
    let (code, stderr) = run(&["run", "--ringbuf-size", "5000", "--pid", "1"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("5000 is not a power of two"), "{stderr}");
    let (code, stderr) = run(&["run", "--no-such-flag"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unexpected argument '--no-such-flag'"),
        "{stderr}"
    );
}

#[test]
fn a_missing_scope_is_one_sentence() {
    let (code, stderr) = run(&["run"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "map-audit: nothing to audit: give --pid PID, --comm NAME, --cgroup PATH, --container ID, --pod NAMESPACE/NAME, --all, or -- COMMAND [ARGS]"
    );
}

#[test]
fn a_command_that_does_not_exist_is_one_sentence() {
    let (code, stderr) = run(&["run", "--", "/nonexistent/program"]);
    assert_eq!(code, 1);
    assert_eq!(
        stderr.trim(),
        "map-audit: cannot run `/nonexistent/program`: no such executable file (searched PATH)"
    );
}

#[test]
fn running_without_privilege_is_one_sentence() {
    let out = Command::new(AGENT)
        .args(["run", "--pid", "1"])
        .uid(65534)
        .gid(65534)
        .output()
        .expect("the agent runs as nobody");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr.trim(),
        "map-audit: map-audit needs root or the CAP_BPF and CAP_PERFMON capabilities; run it with sudo"
    );
}
