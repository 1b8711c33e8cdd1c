//! `run --config FILE`: settings from TOML, overridden by flags; unknown keys and bad
//! values refused with the key, its line and what is allowed; `--format pretty`.

mod common;

use std::process::Command;

use common::{AGENT, run_agent, workload};

fn refused(config: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("map-audit.toml");
    std::fs::write(&path, config).unwrap();
    let out = Command::new(AGENT)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{config}");
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one sentence: {stderr}");
    stderr.replace(path.to_str().unwrap(), "FILE")
}

#[test]
fn unknown_keys_and_bad_values_name_the_key_the_line_and_what_is_allowed() {
    let unknown = refused("all = true\n\nevry_event = true\n");
    assert!(
        unknown.starts_with("map-audit: FILE:3: unknown key `evry_event`; allowed keys: "),
        "{unknown}"
    );
    assert!(unknown.contains("every_event"), "{unknown}");

    let bad = refused("all = true\nrate_limit = \"fast\"\n");
    assert!(
        bad.starts_with("map-audit: FILE:2: bad value for `rate_limit`: "),
        "{bad}"
    );
    assert!(bad.contains("`fast` is not a rate like 1000/s"), "{bad}");

    let bad_enum = refused("fault_hook = \"uprobe\"\n");
    assert!(
        bad_enum.contains("FILE:1: bad value for `fault_hook`"),
        "{bad_enum}"
    );
    assert!(
        bad_enum.contains("possible values: auto"),
        "what is allowed: {bad_enum}"
    );

    let not_toml = refused("all = \n");
    assert!(
        not_toml.starts_with("map-audit: FILE is not valid TOML"),
        "{not_toml}"
    );
}

#[test]
fn the_file_configures_a_run_and_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("events.log");
    let config = dir.path().join("map-audit.toml");
    std::fs::write(
        &config,
        format!(
            "every-event = true\nformat = \"pretty\"\noutput = \"{}\"\nstats_interval = 0\n",
            output.display()
        ),
    )
    .unwrap();
    let workload = workload().to_str().unwrap().to_string();
    let run = run_agent(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--",
        &workload,
        "anon",
        "4",
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    let text = std::fs::read_to_string(&output).unwrap();
    let faults: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" write_fault "))
        .collect();
    assert!(faults.len() >= 8, "every event, pretty:\n{text}");
    assert!(
        faults
            .iter()
            .any(|l| l.contains("stack=write_pages <- anon <- main")),
        "{text}"
    );
    assert!(
        faults.iter().all(|l| l.contains(" count=1 ")),
        "--every-event came from the file"
    );

    // A flag beats the file.
    std::fs::remove_file(&output).unwrap();
    let run = run_agent(&[
        "run",
        "--config",
        config.to_str().unwrap(),
        "--format",
        "json",
        "--",
        &workload,
        "anon",
        "4",
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    let text = std::fs::read_to_string(&output).unwrap();
    assert!(
        text.lines()
            .all(|l| common::parse_event(l)["schema"] == "map-audit/v1"),
        "JSON again"
    );
}
