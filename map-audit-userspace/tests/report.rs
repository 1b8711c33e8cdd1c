//! `map-audit report` on streams from real runs of the C workload: the tables' totals
//! equal the stream's counts, and the flame graph is well-formed SVG whose frames carry
//! the workload's functions with their write counts.

mod common;

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
};

use common::{AGENT, run_agent, workload};
use serde_json::Value;

/// The JSON lines of an agent run over `workload anon 96` (96 pages written by
/// `write_pages`, 96 more by `rewrite_pages`).
fn stream(dir: &Path, mode: &[&str]) -> String {
    let out = dir.join("run.jsonl");
    let mut args = vec!["run", "-o", out.to_str().unwrap()];
    args.extend_from_slice(mode);
    args.extend_from_slice(&["--", workload().to_str().unwrap(), "anon", "96"]);
    let run = run_agent(&args);
    assert!(run.status.success(), "{}", run.stderr);
    std::fs::read_to_string(out).unwrap()
}

fn report(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(AGENT)
        .arg("report")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn write_faults(stream: &str) -> Vec<Value> {
    stream
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "write_fault")
        .collect()
}

fn count(event: &Value) -> u64 {
    event["count"].as_u64().unwrap_or(1)
}

/// Writes whose stack holds `symbol`, by the stream's own counts.
fn writes_through(stream: &str, symbol: &str) -> u64 {
    write_faults(stream)
        .iter()
        .filter(|e| {
            e["stack"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["symbol"] == symbol)
        })
        .map(count)
        .sum()
}

/// "N writes in" from the report's first line, and the sum of the process rows.
fn table_totals(stdout: &str) -> (u64, u64) {
    let first = stdout.lines().next().unwrap();
    let total = first
        .strip_prefix("map-audit report: ")
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    let rows: u64 = stdout
        .split("\ntop ")
        .nth(1)
        .unwrap()
        .lines()
        .skip(2)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap().parse::<u64>().unwrap())
        .sum();
    (total, rows)
}

#[test]
fn the_tables_add_up_to_the_streams_counts_aggregated_and_every_event() {
    for mode in [&[][..], &["--every-event"]] {
        let dir = tempfile::tempdir().unwrap();
        let stream = stream(dir.path(), mode);
        let expected: u64 = write_faults(&stream).iter().map(count).sum();
        assert!(
            expected >= 192,
            "{mode:?}: the workload's writes are in the stream"
        );
        let out = report(&["-"], &stream);
        assert!(out.status.success());
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            table_totals(&stdout),
            (expected, expected),
            "{mode:?}:\n{stdout}"
        );
        assert!(
            stdout.contains("write_pages"),
            "the stacks table names the writers:\n{stdout}"
        );
        assert!(
            stdout.contains("[anon] rw- 384 KiB"),
            "the region row:\n{stdout}"
        );
    }
}

#[test]
fn the_flame_graph_is_svg_weighted_by_write_count() {
    let dir = tempfile::tempdir().unwrap();
    let stream = stream(dir.path(), &[]);
    let input = dir.path().join("run.jsonl");
    let svg = dir.path().join("writes.svg");
    let folded = dir.path().join("writes.folded");
    let out = Command::new(AGENT)
        .arg("report")
        .arg(&input)
        .arg("--flamegraph")
        .arg(&svg)
        .arg("--folded")
        .arg(&folded)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "no table unless --table");

    let text = std::fs::read_to_string(&svg).unwrap();
    let doc = roxmltree::Document::parse_with_options(
        &text,
        roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        },
    )
    .expect("the flame graph is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    // inferno titles each frame "NAME (N writes, P%)".
    let writes_of = |name: &str| -> u64 {
        doc.descendants()
            .filter(|n| n.has_tag_name("title"))
            .filter_map(|n| n.text())
            .filter_map(|t| t.strip_prefix(&format!("{name} (")))
            .map(|rest| {
                rest.split(' ')
                    .next()
                    .unwrap()
                    .replace(',', "")
                    .parse::<u64>()
                    .unwrap()
            })
            .sum()
    };
    for function in ["write_pages", "rewrite_pages"] {
        let expected = writes_through(&stream, function);
        assert!(expected >= 96, "{function}: {expected}");
        assert_eq!(
            writes_of(function),
            expected,
            "{function}'s frame width is its write count"
        );
    }

    let folded = std::fs::read_to_string(&folded).unwrap();
    let through = |function: &str| -> u64 {
        folded
            .lines()
            .filter(|l| l.split(';').any(|f| f.split(' ').next() == Some(function)))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(
        through("write_pages"),
        writes_through(&stream, "write_pages")
    );
    for line in folded.lines().filter(|l| l.contains(";write_pages ")) {
        let frames: Vec<&str> = line.rsplit_once(' ').unwrap().0.split(';').collect();
        let at = |f: &str| frames.iter().position(|x| *x == f);
        assert!(
            at("main") < at("anon") && at("anon") < at("write_pages"),
            "root frames first: {line}"
        );
    }
}

#[test]
fn group_by_process_roots_stacks_at_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let stream = stream(dir.path(), &[]);
    let folded = dir.path().join("by-process.folded");
    let out = report(
        &[
            "--group-by",
            "process",
            "--folded",
            folded.to_str().unwrap(),
        ],
        &stream,
    );
    assert!(out.status.success());
    let pid = write_faults(&stream)[0]["pid"].as_u64().unwrap();
    let comm = write_faults(&stream)[0]["comm"]
        .as_str()
        .unwrap()
        .to_string();
    let folded = std::fs::read_to_string(folded).unwrap();
    assert!(!folded.is_empty());
    assert!(
        folded
            .lines()
            .all(|l| l.starts_with(&format!("{comm} ({pid});"))),
        "{folded}"
    );
}

#[test]
fn malformed_lines_are_counted_and_skipped_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let stream = stream(dir.path(), &[]);
    let expected: u64 = write_faults(&stream).iter().map(count).sum();
    let damaged = format!("not json\n{{\"event\":\"write_fault\",\"pid\":1}}\n{stream}{{\"cut");
    let out = report(&[], &damaged);
    assert!(out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim(),
        "map-audit report: skipped 3 malformed line(s) (first at line 1)"
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(table_totals(&stdout).0, expected);
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .ends_with("3 malformed lines skipped")
    );
}

#[test]
fn a_missing_input_file_is_one_sentence() {
    let out = Command::new(AGENT)
        .args(["report", "/nonexistent/run.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("map-audit: cannot open /nonexistent/run.jsonl"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1);
}
