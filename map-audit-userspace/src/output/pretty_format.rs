//! `--format pretty`: one readable line per event for a terminal. JSON stays the
//! default and the only format meant for machines (this one may change).

use serde_json::Value;

/// "TS EVENT fields...", from the event as it would be printed in JSON.
pub fn line(event: &Value) -> String {
    let ts = event["ts"].as_str().unwrap_or("");
    let kind = event["event"].as_str().unwrap_or("?");
    let who = || format!("pid={} comm={}", event["pid"], text(&event["comm"]));
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
            "{} addr={} region=[{}] count={} stack={}",
            who(),
            text(&event["address"]),
            region(&event["region"]),
            event["count"].as_u64().unwrap_or(1),
            stack(&event["stack"])
        ),
        "write_watch" => format!(
            "{} tid={} watch={} {} value={} count={} stack={}",
            who(),
            event["tid"],
            event["watch"],
            event["symbol"].as_str().unwrap_or(text(&event["address"])),
            text(&event["value"]),
            event["count"].as_u64().unwrap_or(1),
            stack(&event["stack"])
        ),
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
        _ => {
            let mut rest = event.as_object().cloned().unwrap_or_default();
            for key in ["schema", "event", "ts", "host"] {
                rest.remove(key);
            }
            Value::Object(rest).to_string()
        }
    };
    format!("{ts} {kind:<24} {detail}")
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
    fn a_write_watch_is_one_readable_line() {
        let event = serde_json::json!({
            "schema": "map-audit/v1", "event": "write_watch", "ts": "2026-11-26T12:00:00.000000001Z",
            "host": "h", "pid": 7, "tid": 9, "comm": "prog", "watch": 0, "address": "0x4040d8",
            "symbol": "counter", "value": "0x2a", "count": 5,
            "stack": [{"symbol": "bump"}, {"symbol": "worker"}, {"symbol": "start_thread"}, {"symbol": "clone3"}]
        });
        assert_eq!(
            line(&event),
            "2026-11-26T12:00:00.000000001Z write_watch              pid=7 comm=prog tid=9 watch=0 counter value=0x2a count=5 stack=bump <- worker <- start_thread"
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
            line(&event),
            "2026-11-26T12:00:00.000000001Z write_fault              pid=7 comm=prog addr=0x7f0000001000 region=[0x7f0000000000-0x7f0000010000 rw- [anon]] count=3 stack=write_pages <- main"
        );
    }
}
