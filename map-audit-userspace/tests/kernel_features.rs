//! The kernel features the eBPF programs use are probed, not read off the release
//! string: `map-audit check` names each; a run starts where all are present and is
//! refused in one sentence naming the missing ones where not. Both sides run for
//! real: the host and the 6.x guests have every feature, the 5.10 guest of
//! `cargo xtask vm-test` lacks some.

mod common;

use std::process::Command;

use common::{AGENT, run_agent};

/// (present, "name (Linux x.y)") of each `kernel feature:` line of `check`.
fn features_in(report: &str) -> Vec<(bool, String)> {
    report
        .lines()
        .filter_map(|line| {
            let (answer, rest) = line.split_once(' ')?;
            let rest = rest.trim_start().strip_prefix("kernel feature: ")?;
            let end = rest.find(')')? + 1;
            Some((answer == "yes", rest[..end].to_string()))
        })
        .collect()
}

#[test]
fn each_feature_is_probed_and_a_run_starts_or_is_refused_in_one_sentence() {
    let check = Command::new(AGENT).arg("check").output().unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    let features = features_in(&report);
    assert_eq!(features.len(), 6, "{report}");
    let missing: Vec<&str> = features
        .iter()
        .filter(|(present, _)| !present)
        .map(|(_, name)| name.as_str())
        .collect();
    if missing.is_empty() {
        let run = run_agent(&["run", "--", "true"]);
        assert!(run.status.success(), "{}", run.stderr);
        assert_eq!(run.of_kind("agent_started").len(), 1, "{}", run.stderr);
        return;
    }
    assert_ne!(check.status.code(), Some(0), "{report}");
    let out = Command::new(AGENT)
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "nothing is loaded, nothing is printed"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "map-audit: this kernel ({}) lacks {}, which map-audit's programs use, so it cannot run here",
            release.trim(),
            missing.join(", ")
        )
    );
}
