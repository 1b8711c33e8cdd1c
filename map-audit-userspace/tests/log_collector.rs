//! A real log collector: Debian's rsyslog (imfile + mmjsonparse) runs the shipped
//! deploy/rsyslog/map-audit.conf, tails the agent's `--output` file, parses every line
//! and writes the fields to its own file; events must arrive with their fields intact,
//! across a rotation (mv + SIGHUP). `cargo xtask test` installs rsyslog.

mod common;

use std::{
    io::Write,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{Agent, workload};
use serde_json::Value;

const RSYSLOGD: &str = "/usr/sbin/rsyslogd";

struct Rsyslog(Child);

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_rsyslog(dir: &Path, input: &Path, output: &Path) -> Rsyslog {
    assert!(
        Path::new(RSYSLOGD).exists(),
        "{RSYSLOGD} is missing: `cargo xtask test` installs rsyslog (apt-get install rsyslog)"
    );
    let shipped = include_str!("../../deploy/rsyslog/map-audit.conf");
    let work = dir.join("work");
    std::fs::create_dir_all(&work).unwrap();
    let config = shipped
        .replace("@WORK@", work.to_str().unwrap())
        .replace("@INPUT@", input.to_str().unwrap())
        .replace("@OUTPUT@", output.to_str().unwrap());
    let path = dir.join("rsyslog.conf");
    std::fs::write(&path, config).unwrap();
    let check = Command::new(RSYSLOGD)
        .arg("-N1")
        .arg("-f")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "rsyslog rejects the shipped config: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    let child = Command::new(RSYSLOGD)
        .args(["-n", "-f"])
        .arg(&path)
        .arg("-i")
        .arg(dir.join("rsyslogd.pid"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Rsyslog(child)
}

/// Rows of rsyslog's output file (tab-separated fields) once `enough` holds.
fn rows_when(
    output: &Path,
    what: &str,
    enough: impl Fn(&[Vec<String>]) -> bool,
) -> Vec<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(output).unwrap_or_default();
        let rows: Vec<Vec<String>> = text
            .lines()
            .map(|l| l.split('\t').map(String::from).collect())
            .collect();
        if enough(&rows) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "rsyslog never wrote {what}; so far:\n{text}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn rsyslog_parses_every_event_across_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("map-audit.jsonl");
    let parsed = dir.path().join("parsed.tsv");
    let _rsyslog = start_rsyslog(dir.path(), &input, &parsed);

    let mut target = Command::new(workload())
        .args(["map-then-wait", "8"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let target_pid = u64::from(target.id());
    let pid = target_pid.to_string();
    let agent = Agent::start(&[
        "run",
        "--every-event",
        "--pid",
        &pid,
        "--output",
        input.to_str().unwrap(),
    ]);
    rows_when(&parsed, "agent_started", |rows| {
        rows.iter().any(|r| r[0] == "agent_started")
    });

    // Rotate: move the file away, SIGHUP, and only then write.
    std::fs::rename(&input, dir.path().join("map-audit.jsonl.1")).unwrap();
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !input.exists() {
        assert!(
            Instant::now() < deadline,
            "the agent did not reopen its output after SIGHUP"
        );
        thread::sleep(Duration::from_millis(20));
    }
    target.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(target.wait().unwrap().success());

    let rows = rows_when(
        &parsed,
        "the write faults written after the rotation",
        |rows| {
            rows.iter()
                .filter(|r| r[0] == "write_fault" && r[2] == pid)
                .count()
                >= 7
        },
    );
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);

    // The fields rsyslog parsed are the agent's, intact.
    let written: Vec<Value> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(common::parse_event)
        .filter(|e| e["event"] == "write_fault" && e["pid"].as_u64() == Some(target_pid))
        .collect();
    assert!(written.len() >= 7);
    for event in &written {
        let row = rows
            .iter()
            .find(|r| r[0] == "write_fault" && r[4] == event["address"].as_str().unwrap())
            .unwrap_or_else(|| panic!("rsyslog lost {event}"));
        assert_eq!(row[1], event["ts"].as_str().unwrap());
        assert_eq!(row[3], event["comm"].as_str().unwrap());
        assert_eq!(row[5], event["region"]["start"].as_str().unwrap());
        assert_eq!(row[6], "rw-");
        let stack: Value = serde_json::from_str(&row[8]).expect("the stack arrives as JSON");
        assert_eq!(stack, event["stack"], "symbols intact");
        let symbols: Vec<&str> = stack
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["symbol"].as_str())
            .collect();
        assert!(symbols.contains(&"rewrite_pages"), "{symbols:?}");
    }
}
