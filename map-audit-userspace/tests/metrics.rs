//! `--metrics-addr`: a real run is scraped over HTTP while the agent runs, and every
//! counter it serves equals the same counter in the JSON stream's last `agent_stats`.

mod common;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Stdio},
    thread,
    time::Duration,
};

use common::{Agent, workload};
use serde_json::Value;

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET `path`: (status line, body).
fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

/// `name{labels} value` lines, keyed by everything before the value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_string(), value.parse().unwrap())
        })
        .collect()
}

#[test]
fn a_scrape_during_a_run_matches_the_json_stream() {
    let port = free_port();
    let mut target = Command::new(workload())
        .args(["map-then-wait", "8"])
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = target.id().to_string();
    let addr = format!("127.0.0.1:{port}");
    let agent = Agent::start(&[
        "run",
        "--pid",
        &pid,
        "--metrics-addr",
        &addr,
        "--stats-interval",
        "1",
    ]);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    target.stdin.take().unwrap().write_all(b"go\n").unwrap();
    assert!(target.wait().unwrap().success());
    agent.wait_for("the target's writes", |e| {
        e["event"] == "write_fault" && e["count"].as_u64() >= Some(7)
    });

    // Once the target is gone the counters stop moving: two equal agent_stats in a row.
    let (stats, scraped) = loop {
        let events = agent.events();
        let stats: Vec<&Value> = events
            .iter()
            .filter(|e| e["event"] == "agent_stats")
            .collect();
        if let [.., before, last] = stats[..]
            && before["counters"] == last["counters"]
        {
            let (status, body) = get(port, "/metrics");
            assert_eq!(status, "HTTP/1.1 200 OK");
            let after = agent.events();
            let latest = after.iter().rfind(|e| e["event"] == "agent_stats").unwrap();
            if latest["counters"] == last["counters"] {
                break (last.clone(), body);
            }
        }
        thread::sleep(Duration::from_millis(200));
    };
    let metrics = samples(&scraped);
    let value = |key: &str| {
        *metrics
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in:\n{scraped}"))
    };
    for section in ["kernel", "agent"] {
        for (name, count) in stats["counters"][section].as_object().unwrap() {
            assert_eq!(
                value(&format!(
                    "map_audit_{section}_counter_total{{name=\"{name}\"}}"
                )),
                count.as_u64().unwrap() as f64,
                "{section}.{name}"
            );
        }
    }
    let kernel = &stats["counters"]["kernel"];
    assert!(kernel["faults_matched"].as_u64().unwrap() > 0);
    assert_eq!(
        value("map_audit_losses_total{cause=\"faults_lost_ringbuf_full\"}"),
        kernel["faults_lost_ringbuf_full"].as_u64().unwrap() as f64
    );
    for (table, count) in stats["counters"]["table_entries"].as_object().unwrap() {
        assert_eq!(
            value(&format!("map_audit_table_entries{{table=\"{table}\"}}")),
            count.as_u64().unwrap() as f64
        );
    }
    let printed = agent
        .events()
        .iter()
        .filter(|e| e["event"] == "write_fault")
        .count();
    assert_eq!(
        value("map_audit_events_total{event=\"write_fault\"}"),
        printed as f64
    );
    assert_eq!(
        value("map_audit_ringbuf_capacity_bytes"),
        16.0 * 1024.0 * 1024.0
    );
    assert!(value("map_audit_symbolization_seconds_count") >= 1.0);
    assert!(
        metrics
            .keys()
            .any(|k| k.starts_with("map_audit_hook{role=\"fault_user\"")),
        "the fault hook in use:\n{scraped}"
    );
    assert_eq!(get(port, "/other").0, "HTTP/1.1 404 Not Found");
    let run = agent.stop();
    assert!(run.status.success(), "{}", run.stderr);
}

#[test]
fn a_metrics_address_in_use_is_one_sentence() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(common::AGENT)
        .args(["run", "--all", "--metrics-addr", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with(&format!(
            "map-audit: cannot listen on --metrics-addr {addr}"
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
