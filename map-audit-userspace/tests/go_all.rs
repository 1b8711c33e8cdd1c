//! `map-audit go-maps --all-go` against real Go programs: every Go program of the host
//! gets the crash hooks. A test binary of its own: its agent hooks every Go program on
//! the host, so it must not run beside the other Go mode tests (test binaries run one
//! at a time).

mod common;

use std::{
    io::Write,
    path::Path,
    process::{Child, Command, Stdio},
};

use common::{
    Agent,
    go_programs::{Build, Go, mapwriters},
};
use serde_json::Value;

fn race_on_input(program: &Path) -> Child {
    Command::new(program)
        .arg("race-on-input")
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn hooked_in(pid: u32) -> impl Fn(&Value) -> bool {
    move |e| e["event"] == "go_program_hooked" && e["pid"].as_u64() == Some(u64::from(pid))
}

/// Two Go programs running before the agent (built by Go 1.24 and 1.27: their
/// goroutine ids sit at different offsets) and one exec'd after it (a copy of the 1.24
/// build: a file not seen yet) are hooked; a C program running meanwhile is not. Each
/// one's crash names its goroutine and every thread.
#[test]
fn all_go_hooks_go_programs_running_and_started_later_go1_24_go1_27() {
    let go_1_24 = mapwriters(Go::V1_24, Build::Plain);
    let go_1_27 = mapwriters(Go::V1_27, Build::Plain);
    let copy = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mapwriters-copy-{}", std::process::id()));
    std::fs::copy(&go_1_24, &copy).unwrap();
    let not_go = Command::new("sleep").arg("120").spawn().unwrap();
    let mut programs = vec![race_on_input(&go_1_24), race_on_input(&go_1_27)];

    let agent = Agent::start(&["go-maps", "--all-go"]);
    let started = agent.first("go_maps_started", |e| e["event"] == "go_maps_started");
    assert_eq!(started["all_go"], true);
    assert_eq!(started["mode"], "crash_only");
    assert!(started.get("exe").is_none(), "{started}");
    for program in &programs {
        let hooked = agent.first("the running programs hooked", hooked_in(program.id()));
        assert_eq!(hooked["found"], "running", "{hooked}");
    }
    programs.push(race_on_input(&copy));
    let hooked = agent.first("the exec'd program hooked", hooked_in(programs[2].id()));
    assert_eq!(hooked["found"], "exec", "{hooked}");
    assert_eq!(hooked["exe"], copy.display().to_string());

    // Go 1.24 keeps `goid` at 160 in `runtime.g`, 1.27 at 152.
    let files = [(&go_1_24, 160), (&go_1_27, 152), (&copy, 160)];
    for (program, (file, goid_offset)) in programs.iter_mut().zip(files) {
        let hooked = agent.first("its program", |e| {
            e["event"] == "go_program_hooked" && e["exe"] == file.display().to_string()
        });
        assert_eq!(hooked["goid_offset"], goid_offset, "{hooked}");
        writeln!(program.stdin.as_mut().unwrap()).unwrap();
        assert_eq!(
            program.wait().unwrap().code(),
            Some(2),
            "it crashed as it would have"
        );
        let pid = u64::from(program.id());
        agent.wait_for("its crash and threads", |e| {
            e["event"] == "go_crash_thread" && e["pid"].as_u64() == Some(pid)
        });
    }
    let run = agent.stop();
    let mut not_go = not_go;
    not_go.kill().unwrap();
    not_go.wait().unwrap();
    std::fs::remove_file(&copy).unwrap();

    let hooked = run.of_kind("go_program_hooked");
    assert!(
        hooked.iter().all(|h| h["go_version"].as_str().is_some()
            && !h["exe"].as_str().unwrap().ends_with("/sleep")),
        "only Go programs are hooked: {hooked:?}"
    );
    for program in &programs {
        let pid = u64::from(program.id());
        let crash = run
            .of_kind("go_runtime_crash")
            .into_iter()
            .find(|c| c["pid"].as_u64() == Some(pid) && c["threads_captured"].is_u64())
            .unwrap_or_else(|| panic!("a captured crash of pid {pid}: {}", run.stderr));
        // Usually "concurrent map writes"; the race can also damage the map first
        // ("small map with no empty slot (concurrent map writes?)", a fault): the
        // same fatal paths.
        assert!(
            ["fatal", "unrecovered_panic"].contains(&crash["kind"].as_str().unwrap()),
            "{crash}"
        );
        assert!(crash["message"].is_string(), "{crash}");
        let threads: Vec<&Value> = run
            .of_kind("go_crash_thread")
            .into_iter()
            .filter(|t| t["pid"].as_u64() == Some(pid) && t["crash_tid"] == crash["tid"])
            .collect();
        assert_eq!(
            crash["threads_captured"].as_u64(),
            Some(threads.len() as u64)
        );
        // The goroutine id, read at the fatal path through the program's own offset
        // (a wrong one reads another field of `runtime.g`: a pointer or a status).
        let goid = crash["goid"].as_u64().unwrap();
        assert!((1..10_000).contains(&goid), "{crash}");
        // The stack the uprobe took: the fatal path, then the writer that crashed.
        let symbols: Vec<&str> = crash["stack"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|f| f["symbol"].as_str())
            .collect();
        assert!(
            symbols
                .iter()
                .any(|s| *s == "main.raceWriterA" || *s == "main.raceWriterB"),
            "the crashing goroutine is in a writer: {symbols:?}"
        );
    }
    let stopped = run.events.last().unwrap();
    assert_eq!(stopped["event"], "go_maps_stopped");
    let agent_counters = &stopped["counters"]["agent"];
    assert_eq!(
        agent_counters["programs_hooked"].as_u64(),
        Some(hooked.len() as u64)
    );
    assert!(
        agent_counters["programs_not_go"].as_u64().unwrap() > 0,
        "the C programs were looked at: {agent_counters}"
    );
    assert_eq!(agent_counters["crash_captures"], 3, "{agent_counters}");
}
