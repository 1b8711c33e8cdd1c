//! The kernel features the eBPF programs use are probed, not read off the release
//! string: `map-audit check` names each, and the answer picks one of the two embedded
//! objects (5.17+, or the one for 5.10 to 5.16) or refuses the run in one sentence
//! naming what neither object does without. Both objects run for real: the host and
//! the 6.x guests have every feature, the 5.10 guest of `cargo xtask vm-test` lacks
//! five of them.

mod common;

use std::process::Command;

use common::{AGENT, run_agent};

/// One `kernel feature:` line of `check`.
struct Feature {
    /// "name (Linux x.y)".
    name: String,
    detail: String,
}

fn features_in(report: &str) -> Vec<Feature> {
    report
        .lines()
        .filter_map(|line| {
            let rest = line.split_once("kernel feature: ")?.1;
            let end = rest.find(')')? + 1;
            Some(Feature {
                name: rest[..end].to_string(),
                detail: rest[end..].trim().to_string(),
            })
        })
        .collect()
}

#[test]
fn each_feature_is_probed_and_a_run_starts_with_the_object_they_allow_or_is_refused_in_one_sentence()
 {
    let check = Command::new(AGENT).arg("check").output().unwrap();
    let report = String::from_utf8_lossy(&check.stdout);
    let features = features_in(&report);
    assert_eq!(features.len(), 6, "{report}");
    let missing = |detail: &str| -> Vec<&str> {
        features
            .iter()
            .filter(|f| f.detail.starts_with(detail))
            .map(|f| f.name.as_str())
            .collect()
    };
    let needed = missing("missing: map-audit's programs use it");
    let avoided = missing("missing: the object for older kernels runs instead");
    if needed.is_empty() {
        let run = run_agent(&["run", "--", "true"]);
        assert!(run.status.success(), "{}", run.stderr);
        let started = run.of_kind("agent_started");
        assert_eq!(started.len(), 1, "{}", run.stderr);
        let programs = &started[0]["programs"];
        let degraded = programs["degraded"].as_array().unwrap();
        if avoided.is_empty() {
            assert_eq!(programs["object"], "linux5_17", "{report}");
            assert!(degraded.is_empty());
        } else {
            assert_eq!(programs["object"], "linux5_10", "{report}");
            assert!(!degraded.is_empty());
            assert!(report.contains("the one for older kernels"), "{report}");
            go_mode_is_refused_in_one_sentence();
        }
        return;
    }
    assert_ne!(check.status.code(), Some(0), "{report}");
    let out = Command::new(AGENT)
        .args(["run", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "nothing is loaded, nothing is printed"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "map-audit: this kernel ({}) lacks {}, which map-audit's programs use, so it cannot run here",
            release(),
            needed.join(", ")
        )
    );
}

/// Go mode needs 5.17's features whichever object runs.
fn go_mode_is_refused_in_one_sentence() {
    let out = Command::new(AGENT)
        .args(["go-maps", "--all-go"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "map-audit: Go mode needs the BPF features of Linux 5.17 (bpf_loop and bpf_get_attach_cookie among them), which this kernel ({}) lacks; `map-audit run` works here, and `map-audit check` lists what is missing",
            release()
        )
    );
}

fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap()
        .trim()
        .to_string()
}
