//! What a new user meets in the first hour: a damaged stream given to `report`, a
//! flame graph of a stream without writes, `--format pretty`, an output path that is a
//! symlink, frames without a name in a stripped binary, and the help text.

mod common;

use std::process::{Command, Output};

use common::{AGENT, run_agent, workload};
use serde_json::Value;

fn agent(args: &[&str]) -> Output {
    Command::new(AGENT)
        .args(args)
        .output()
        .expect("the agent runs")
}

/// The stream of one run of the workload (`anon 32`), as written to a file.
fn stream_file(dir: &std::path::Path, program: &str) -> std::path::PathBuf {
    let out = dir.join("run.jsonl");
    let run = run_agent(&[
        "run",
        "-o",
        out.to_str().unwrap(),
        "--",
        program,
        "anon",
        "32",
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    out
}

#[test]
fn report_skips_a_line_that_is_not_utf8_like_any_malformed_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = stream_file(dir.path(), workload().to_str().unwrap());
    let mut bytes = b"\xff\xfe torn write \xc3\n".to_vec();
    bytes.extend(std::fs::read(&path).unwrap());
    std::fs::write(&path, bytes).unwrap();
    let out = agent(&["report", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "map-audit report: skipped 1 malformed line(s) (first at line 1)"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("write_pages"), "{stdout}");
}

#[test]
fn a_flame_graph_of_a_stream_without_writes_is_one_sentence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.jsonl");
    std::fs::write(
        &path,
        "{\"event\":\"agent_started\"}\n{\"event\":\"agent_stopped\"}\nnot json\n",
    )
    .unwrap();
    let svg = dir.path().join("out.svg");
    let out = agent(&[
        "report",
        path.to_str().unwrap(),
        "--flamegraph",
        svg.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains("skipped")).collect();
    assert_eq!(
        lines,
        [format!(
            "map-audit: no write_fault or write_watch events in {}: 2 other events, 1 malformed lines; a stream from `map-audit run` or `watch` has them",
            path.display()
        )],
        "{stderr}"
    );
    assert!(!svg.exists(), "no empty flame graph left behind");
}

#[test]
fn pretty_lines_are_in_time_order_and_agent_started_is_a_sentence() {
    let out = agent(&[
        "run",
        "--format",
        "pretty",
        "--stats-interval",
        "0",
        "--",
        workload().to_str().unwrap(),
        "anon",
        "64",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("workload:"))
        .collect();
    let started = lines
        .iter()
        .find(|l| l.contains(" agent_started "))
        .unwrap();
    assert!(
        !started.contains('{')
            && started.contains("hook: ")
            && started.contains("auditing command"),
        "{started}"
    );
    let stamps: Vec<&str> = lines.iter().map(|l| l.split(' ').next().unwrap()).collect();
    assert!(stamps.is_sorted(), "{text}");
    let fault = lines.iter().find(|l| l.contains(" write_fault ")).unwrap();
    assert!(
        fault.contains(" during="),
        "aggregates show their span: {fault}"
    );
}

#[test]
fn an_output_path_that_is_a_symlink_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("out.jsonl");
    std::os::unix::fs::symlink(dir.path().join("target.jsonl"), &link).unwrap();
    let out = agent(&[
        "run",
        "-o",
        link.to_str().unwrap(),
        "--",
        workload().to_str().unwrap(),
        "anon",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("is a symbolic link") && stderr.contains("docs/security.md"),
        "{stderr}"
    );
    assert!(!stderr.contains("os error 40"), "{stderr}");
}

#[test]
fn frames_without_a_name_carry_and_report_their_module_offset() {
    let dir = tempfile::tempdir().unwrap();
    let stripped = dir.path().join("workload-stripped");
    std::fs::copy(workload(), &stripped).unwrap();
    assert!(
        Command::new("strip")
            .arg("-s")
            .arg(&stripped)
            .status()
            .unwrap()
            .success()
    );
    let path = stream_file(dir.path(), stripped.to_str().unwrap());
    let size = std::fs::metadata(&stripped).unwrap().len();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut offsets = Vec::new();
    for event in text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
    {
        for frame in event["stack"].as_array().into_iter().flatten() {
            if frame["symbol"].is_null() && frame["module"] == stripped.to_str().unwrap() {
                let offset = frame["module_offset"].as_str().expect("a file offset");
                offsets.push(u64::from_str_radix(&offset[2..], 16).unwrap());
            }
        }
    }
    assert!(
        !offsets.is_empty(),
        "the stripped program's own frames have no name"
    );
    assert!(
        offsets.iter().all(|&o| o < size),
        "offsets into the file: {offsets:x?}"
    );
    let report = agent(&["report", path.to_str().unwrap()]);
    let table = String::from_utf8_lossy(&report.stdout);
    let label = format!("workload-stripped+{:#x}", offsets[0]);
    assert!(table.contains(&label), "{label} in:\n{table}");
}

#[test]
fn help_says_what_to_try_first_and_shows_an_example_per_command() {
    let bare = agent(&[]);
    let text = String::from_utf8_lossy(&bare.stderr);
    assert_eq!(bare.status.code(), Some(2));
    assert!(
        text.contains("Start here: `sudo map-audit check`"),
        "{text}"
    );
    for command in ["run", "check", "watch", "go-maps", "report"] {
        let help = agent(&[command, "--help"]);
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(help.status.success());
        let example = text
            .lines()
            .find(|l| l.starts_with("Example: "))
            .unwrap_or_else(|| panic!("{command} --help has no example:\n{text}"));
        assert!(
            example.contains(&format!("map-audit {command}")),
            "{example}"
        );
    }
}
