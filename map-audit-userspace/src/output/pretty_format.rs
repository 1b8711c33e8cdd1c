//! `--format pretty`: one readable line per event for a terminal. JSON stays the
//! default and the only format meant for machines (this one may change).

use serde_json::Value;

/// "TS EVENT fields...", from the event as it would be printed in JSON; TS is
/// `written`, when the line is written (aggregates add their "first..last" span).
pub fn line(event: &Value, written: &str) -> String {
    let kind = event["event"].as_str().unwrap_or("?");
    let who = || {
        let mut who = format!("pid={} comm={}", event["pid"], text(&event["comm"]));
        let container = &event["container"];
        if let Some(id) = container["id"].as_str() {
            let short: String = id.chars().take(12).collect();
            who.push_str(&format!(" container={short}"));
        }
        if let Some(uid) = event["kubernetes"]["pod_uid"].as_str() {
            who.push_str(&format!(" pod={uid}"));
        }
        who
    };
    let region = |r: &Value| {
        format!(
            "{}-{} {} {}",
            text(&r["start"]),
            text(&r["end"]),
            text(&r["prot"]),
            r["path"].as_str().unwrap_or("[anon]")
        )
    };
    let detail = match kind {
        "write_fault" => format!(
            "{} addr={} region=[{}] count={}{} stack={}",
            who(),
            text(&event["address"]),
            region(&event["region"]),
            event["count"].as_u64().unwrap_or(1),
            span(event),
            stack(&event["stack"])
        ),
        "write_watch" => format!(
            "{} tid={} watch={} {} value={} count={}{} stack={}",
            who(),
            event["tid"],
            event["watch"],
            event["symbol"].as_str().unwrap_or(text(&event["address"])),
            text(&event["value"]),
            event["count"].as_u64().unwrap_or(1),
            span(event),
            stack(&event["stack"])
        ),
        "region_synced" => format!(
            "{} region=[{}] flags={} result={} pages_written={} took={}us count={}{} stack={}",
            who(),
            region(&event["region"]),
            event["flags"],
            event["result"],
            event["pages_written_since_last_sync"],
            event["duration_ns"].as_u64().unwrap_or(0) / 1000,
            event["count"].as_u64().unwrap_or(1),
            span(event),
            stack(&event["stack"])
        ),
        "region_unsynced" => format!(
            "{} region=[{}] {} pages unsynced since {} ({})",
            who(),
            region(&event["region"]),
            event["pages"],
            text(&event["since_ts"]),
            text(&event["reason"])
        ),
        "agent_started" => started(event),
        "watch_started" => format!(
            "pid={} watch={} {} at {} ({} bytes, {} threads)",
            event["pid"],
            event["watch"],
            event["symbol"].as_str().unwrap_or("address"),
            text(&event["address"]),
            event["length"],
            event["threads"]
        ),
        "region_mapped" | "region_unmapped" | "region_protected" => {
            format!("{} region=[{}]", who(), region(&event["region"]))
        }
        "agent_stats" | "agent_stopped" | "go_maps_stats" | "go_maps_stopped" => {
            nonzero(&event["counters"])
        }
        "go_map_concurrent_write" => {
            let writers = event["writers"].as_array().cloned().unwrap_or_default();
            let sides: Vec<String> = writers
                .iter()
                .map(|w| {
                    format!(
                        "goid {} {} in {}",
                        w["goid"],
                        text(&w["operation"]),
                        stack(&w["stack"])
                    )
                })
                .collect();
            format!(
                "pid={} map={} {}",
                event["pid"],
                text(&event["map"]),
                sides.join(" || ")
            )
        }
        "go_crash_thread" => format!(
            "pid={} tid={} goid={}{}{} in {}",
            event["pid"],
            event["tid"],
            event["goid"],
            if event["crashing"] == true {
                " crashing"
            } else {
                ""
            },
            event["map_function"]
                .as_str()
                .map_or(String::new(), |f| format!(" map_function={f}")),
            stack(&event["stack"])
        ),
        _ => {
            let mut rest = event.as_object().cloned().unwrap_or_default();
            for key in ["schema", "event", "ts", "host"] {
                rest.remove(key);
            }
            Value::Object(rest).to_string()
        }
    };
    format!("{written} {kind:<24} {detail}")
}

/// " first..last" (times of day) for an aggregate; the event's own time otherwise.
fn span(event: &Value) -> String {
    let time_of_day = |v: &Value| {
        let ts = v.as_str().unwrap_or("-");
        ts.split_once('T').map_or(ts, |(_, t)| t).to_string()
    };
    match (event.get("first_ts"), event.get("last_ts")) {
        (Some(first), Some(last)) => {
            format!(" during={}..{}", time_of_day(first), time_of_day(last))
        }
        _ => format!(" at={}", time_of_day(&event["ts"])),
    }
}

/// `agent_started`: version, kernel, the fault hook and why, the scope; the other
/// hooks are in `--format json`.
fn started(event: &Value) -> String {
    let hooks = event["hooks"].as_array().cloned().unwrap_or_default();
    let main_hook = hooks
        .iter()
        .find(|h| {
            h["role"]
                .as_str()
                .is_some_and(|r| r.starts_with("fault") || r == "watch")
        })
        .map_or("-".to_string(), |h| {
            format!("{} ({})", text(&h["hook"]), text(&h["reason"]))
        });
    let scope = &event["scope"];
    let mut targets = Vec::new();
    for pid in scope["pids"].as_array().into_iter().flatten() {
        targets.push(format!("pid {pid}"));
    }
    for comm in scope["comms"].as_array().into_iter().flatten() {
        targets.push(format!("comm {}", text(comm)));
    }
    if let Some(command) = scope["command"].as_array() {
        let words: Vec<&str> = command.iter().map(text).collect();
        targets.push(format!("command `{}`", words.join(" ")));
    }
    if targets.is_empty() {
        targets.push("--all or --cgroup".into());
    }
    // Only the older kernels' object is worth a word: it degrades.
    let programs = &event["programs"];
    let object = if programs["object"] == "linux5_10" {
        format!(
            " (object for kernels before 5.17: stacks of at most {} frames; --format json says what else)",
            programs["max_stack_depth"]
        )
    } else {
        String::new()
    };
    format!(
        "map-audit {} on Linux {}{object}; hook: {}; auditing {}; {} hooks in all (--format json lists them)",
        text(&event["version"]),
        text(&event["kernel_release"]),
        main_hook,
        targets.join(", "),
        hooks.len()
    )
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

/// The three innermost frames: "leaf <- caller <- caller".
fn stack(frames: &Value) -> String {
    let names: Vec<&str> = frames
        .as_array()
        .map(|f| {
            f.iter()
                .take(3)
                .map(|f| f["symbol"].as_str().unwrap_or("?"))
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        "-".into()
    } else {
        names.join(" <- ")
    }
}

/// "name=value" for every non-zero counter.
fn nonzero(counters: &Value) -> String {
    let mut out = Vec::new();
    if let Some(sections) = counters.as_object() {
        for (section, fields) in sections {
            for (name, value) in fields.as_object().into_iter().flatten() {
                if value.as_u64().is_some_and(|v| v > 0) {
                    out.push(format!("{section}.{name}={value}"));
                }
            }
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_started_reads_as_a_sentence() {
        let event = serde_json::json!({
            "schema": "map-audit/v1", "event": "agent_started", "ts": "2026-11-26T12:00:00.000000001Z",
            "host": "h", "version": "0.1.0", "kernel_release": "6.1.0-57-cloud-amd64",
            "hooks": [
                {"role": "mmap", "hook": "tracepoint:syscalls:sys_enter_mmap", "reason": "stable"},
                {"role": "fault_user", "hook": "raw_tracepoint:exceptions:page_fault_user", "reason": "cheapest measured"}
            ],
            "scope": {"pids": [42], "comms": [], "command": ["./prog", "-x"]}
        });
        assert_eq!(
            line(&event, "2026-11-26T12:00:00.000000001Z"),
            "2026-11-26T12:00:00.000000001Z agent_started            map-audit 0.1.0 on Linux 6.1.0-57-cloud-amd64; hook: raw_tracepoint:exceptions:page_fault_user (cheapest measured); auditing pid 42, command `./prog -x`; 2 hooks in all (--format json lists them)"
        );
    }

    #[test]
    fn agent_started_names_the_older_kernels_object() {
        let event = serde_json::json!({
            "event": "agent_started", "version": "0.1.0", "kernel_release": "5.10.0-46-cloud-amd64",
            "programs": {"object": "linux5_10", "max_stack_depth": 32, "degraded": []},
            "hooks": [], "scope": {"pids": [42], "comms": [], "command": null}
        });
        assert_eq!(
            started(&event),
            "map-audit 0.1.0 on Linux 5.10.0-46-cloud-amd64 (object for kernels before 5.17: stacks of at most 32 frames; --format json says what else); hook: -; auditing pid 42; 0 hooks in all (--format json lists them)"
        );
    }

    #[test]
    fn a_write_watch_is_one_readable_line() {
        let event = serde_json::json!({
            "schema": "map-audit/v1", "event": "write_watch", "ts": "2026-11-26T12:00:00.000000001Z",
            "host": "h", "pid": 7, "tid": 9, "comm": "prog", "watch": 0, "address": "0x4040d8",
            "symbol": "counter", "value": "0x2a", "count": 5,
            "first_ts": "2026-11-26T12:00:00.000000001Z", "last_ts": "2026-11-26T12:00:00.500000001Z",
            "stack": [{"symbol": "bump"}, {"symbol": "worker"}, {"symbol": "start_thread"}, {"symbol": "clone3"}]
        });
        assert_eq!(
            line(&event, "2026-11-26T12:00:01.000000001Z"),
            "2026-11-26T12:00:01.000000001Z write_watch              pid=7 comm=prog tid=9 watch=0 counter value=0x2a count=5 during=12:00:00.000000001Z..12:00:00.500000001Z stack=bump <- worker <- start_thread"
        );
    }

    #[test]
    fn a_write_fault_is_one_readable_line() {
        let event = serde_json::json!({
            "schema": "map-audit/v1", "event": "write_fault", "ts": "2026-11-26T12:00:00.000000001Z",
            "host": "h", "pid": 7, "comm": "prog", "address": "0x7f0000001000",
            "region": {"start": "0x7f0000000000", "end": "0x7f0000010000", "prot": "rw-", "path": null},
            "stack": [{"symbol": "write_pages"}, {"symbol": "main"}], "count": 3
        });
        assert_eq!(
            line(&event, "2026-11-26T12:00:01.000000001Z"),
            "2026-11-26T12:00:01.000000001Z write_fault              pid=7 comm=prog addr=0x7f0000001000 region=[0x7f0000000000-0x7f0000010000 rw- [anon]] count=3 at=12:00:00.000000001Z stack=write_pages <- main"
        );
        let mut in_pod = event.clone();
        in_pod["container"] =
            serde_json::json!({"id": "4f5c0a2b9e8d7c6b", "runtime": "containerd"});
        in_pod["kubernetes"] =
            serde_json::json!({"pod_uid": "0f2e5b4c-1a2b-4c3d-8e9f-0123456789ab"});
        assert!(line(&in_pod, "2026-11-26T12:00:01.000000001Z").contains(
            "pid=7 comm=prog container=4f5c0a2b9e8d pod=0f2e5b4c-1a2b-4c3d-8e9f-0123456789ab addr="
        ));
    }
    #[test]
    fn msync_events_are_one_readable_line_each() {
        let region = serde_json::json!({"start": "0x7f0000000000", "end": "0x7f0000010000", "prot": "rw-", "path": "/db/wal"});
        let synced = serde_json::json!({
            "schema": "map-audit/v1", "event": "region_synced", "ts": "2026-11-26T12:00:00.000000001Z",
            "host": "h", "pid": 7, "comm": "prog", "region": region, "flags": ["sync"], "result": 0,
            "duration_ns": 250_000, "pages_written_since_last_sync": 5,
            "stack": [{"symbol": "msync"}, {"symbol": "commit"}, {"symbol": "main"}]
        });
        assert_eq!(
            line(&synced, "2026-11-26T12:00:01.000000001Z"),
            "2026-11-26T12:00:01.000000001Z region_synced            pid=7 comm=prog region=[0x7f0000000000-0x7f0000010000 rw- /db/wal] flags=[\"sync\"] result=0 pages_written=5 took=250us count=1 at=12:00:00.000000001Z stack=msync <- commit <- main"
        );
        let unsynced = serde_json::json!({
            "schema": "map-audit/v1", "event": "region_unsynced", "ts": "2026-11-26T12:00:00.000000001Z",
            "host": "h", "pid": 7, "comm": "prog", "region": region, "reason": "unmapped", "pages": 2,
            "since_ts": "2026-11-26T11:59:59.000000001Z"
        });
        assert_eq!(
            line(&unsynced, "2026-11-26T12:00:01.000000001Z"),
            "2026-11-26T12:00:01.000000001Z region_unsynced          pid=7 comm=prog region=[0x7f0000000000-0x7f0000010000 rw- /db/wal] 2 pages unsynced since 2026-11-26T11:59:59.000000001Z (unmapped)"
        );
    }
}
