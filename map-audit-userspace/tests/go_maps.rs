//! Go mode (`map-audit go-maps`) against real Go programs built here by Debian's Go
//! 1.19 (classic maps) and 1.24 (Swiss-table maps) from `tests/go/mapwriters.go`.
//! `cargo xtask test` installs both toolchains; without one, its tests fail and say
//! how to install it.

mod common;

use std::{
    collections::BTreeSet,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::{
    AGENT, Agent, Run,
    go_programs::{Build, Go, mapwriters},
    hex, run_agent, workload,
};
use serde_json::Value;

/// `mapwriters race`'s exit status when the runtime did not throw within 10 s.
const RACE_WITHOUT_CRASH: i32 = 3;

fn go_maps(program: &Path, args: &[&str]) -> Run {
    let mut all = vec!["go-maps", "--", program.to_str().unwrap()];
    all.extend_from_slice(args);
    run_agent(&all)
}

fn counter(run: &Run, name: &str) -> u64 {
    let stopped = run.events.last().expect("events");
    assert_eq!(
        stopped["event"], "go_maps_stopped",
        "the last event is go_maps_stopped"
    );
    stopped["counters"]["kernel"][name].as_u64().unwrap()
}

/// The symbol of each frame.
fn symbols(stack: &Value) -> Vec<&str> {
    stack
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["symbol"].as_str().unwrap_or("?"))
        .collect()
}

/// Two goroutines race on one map until the runtime throws: the agent names both
/// writers' functions, before the crash, and ties the crash to the map.
fn reports_a_race_before_the_crash(program: &Path) -> Run {
    let run = go_maps(program, &["race"]);
    assert_eq!(
        run.status.code(),
        Some(2),
        "Go's fatal error exit code passes through; stderr:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("fatal error: concurrent map writes"),
        "{}",
        run.stderr
    );
    let races = run.of_kind("go_map_concurrent_write");
    assert!(
        !races.is_empty(),
        "no race reported; stderr:\n{}",
        run.stderr
    );
    let race = races[0];
    let writers = race["writers"].as_array().unwrap();
    assert_ne!(writers[0]["goid"], writers[1]["goid"], "two goroutines");
    let callers: BTreeSet<&str> = writers.iter().map(|w| symbols(&w["stack"])[1]).collect();
    assert_eq!(
        callers,
        BTreeSet::from(["main.raceWriterA", "main.raceWriterB"]),
        "both writers' functions are named: {race}"
    );
    for writer in writers {
        let stack = symbols(&writer["stack"]);
        assert_eq!(
            Some(stack[0]),
            writer["function"].as_str(),
            "the stack starts in the hooked runtime function"
        );
        assert!(stack[0].starts_with("runtime.map"), "{stack:?}");
        assert!(
            stack.contains(&"runtime.goexit") || stack.contains(&"runtime.main"),
            "the walk reaches the goroutine's start: {stack:?}"
        );
    }
    // The writers' frames carry the source line of the map write (from .gopclntab).
    let source = include_str!("go/mapwriters.go");
    let writing_lines: Vec<u64> = (1..)
        .zip(source.lines())
        .filter(|(_, l)| l.contains("shared[") || l.contains("delete(shared"))
        .map(|(n, _)| n)
        .collect();
    for writer in writers {
        let caller = &writer["stack"][1];
        assert!(
            caller["file"]
                .as_str()
                .unwrap()
                .ends_with("tests/go/mapwriters.go"),
            "{caller}"
        );
        assert!(
            writing_lines.contains(&caller["line"].as_u64().unwrap()),
            "{caller} is not a map write of {writing_lines:?}"
        );
    }
    let map = hex(race["map"].as_str().unwrap());
    assert_ne!(map, 0);
    let crash = run
        .of_kind("go_runtime_crash")
        .into_iter()
        .find(|c| c["kind"] == "fatal")
        .expect("the fatal error is reported");
    assert_eq!(crash["message"], "concurrent map writes");
    assert_eq!(
        hex(crash["in_map_write"]["map"].as_str().unwrap()),
        map,
        "the crash is tied to the raced map"
    );
    assert!(
        race["ts"].as_str() < crash["ts"].as_str(),
        "the race is reported before the runtime's crash"
    );
    let reported = run.of_kind("go_map_concurrent_write").len() as u64;
    let stopped = run.events.last().unwrap();
    let agent = &stopped["counters"]["agent"];
    assert_eq!(
        counter(&run, "races") - counter(&run, "races_lost_ringbuf_full"),
        reported + agent["races_suppressed"].as_u64().unwrap(),
        "every race is printed or counted as suppressed: {stopped}"
    );
    assert_eq!(stopped["command_exit_code"], 2);
    run
}

#[test]
fn reports_both_goroutines_of_a_map_race_before_the_crash_go1_19() {
    let run = reports_a_race_before_the_crash(&mapwriters(Go::V1_19, Build::Plain));
    let started = &run.events[0];
    assert_eq!(started["event"], "go_maps_started");
    assert_eq!(started["go_version"], "go1.19.8");
    assert_eq!(
        (
            started["goid_offset"].as_u64(),
            started["goid_offset_source"].as_str()
        ),
        (Some(152), Some("dwarf"))
    );
}

#[test]
fn reports_both_goroutines_of_a_swiss_map_race_before_the_crash_go1_24() {
    reports_a_race_of(Go::V1_24, "go1.24.4", Build::Plain, (160, "dwarf"));
}

/// A newer release's race, with the goid offset its DWARF gives.
fn reports_a_race_of(go: Go, version: &str, how: Build, offset: (u64, &str)) {
    let run = reports_a_race_before_the_crash(&mapwriters(go, how));
    let started = &run.events[0];
    assert_eq!(started["go_version"], version);
    assert_eq!(started["stripped"], how == Build::Stripped);
    assert_eq!(
        (
            started["goid_offset"].as_u64(),
            started["goid_offset_source"].as_str()
        ),
        (Some(offset.0), Some(offset.1))
    );
}

#[test]
fn reports_both_goroutines_of_a_map_race_before_the_crash_go1_25() {
    reports_a_race_of(Go::V1_25, "go1.25.12", Build::Plain, (152, "dwarf"));
}

/// Go 1.26 stores 0 as the function table's text start (entries count from `.text`).
#[test]
fn reports_both_goroutines_of_a_map_race_before_the_crash_go1_26() {
    reports_a_race_of(Go::V1_26, "go1.26.10", Build::Plain, (152, "dwarf"));
}

#[test]
fn reports_both_goroutines_of_a_map_race_before_the_crash_go1_27() {
    reports_a_race_of(Go::V1_27, "go1.27.3", Build::Plain, (152, "dwarf"));
}

#[test]
fn a_stripped_binary_is_named_from_gopclntab_go1_27() {
    reports_a_race_of(Go::V1_27, "go1.27.3", Build::Stripped, (152, "table"));
}

/// A stripped binary of a release newer than any checked: Go 1.27's build with its
/// version strings rewritten to "go1.28.0" (same length) takes 1.27's layout and says
/// so, and its race is still found.
#[test]
fn a_newer_release_without_dwarf_takes_the_newest_layout_go1_27_as_1_28() {
    let mut bytes = std::fs::read(mapwriters(Go::V1_27, Build::Stripped)).unwrap();
    let (old, new) = (b"go1.27.3", b"go1.28.0");
    let mut rewritten = 0;
    for at in 0..bytes.len() - old.len() {
        if &bytes[at..at + old.len()] == old {
            bytes[at..at + old.len()].copy_from_slice(new);
            rewritten += 1;
        }
    }
    assert!(rewritten > 0, "the version string is in the binary");
    let program = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mapwriters-as-go1.28-{}", std::process::id()));
    std::fs::write(&program, bytes).unwrap();
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let run = reports_a_race_before_the_crash(&program);
    let started = &run.events[0];
    assert_eq!(started["go_version"], "go1.28.0");
    assert_eq!(started["goid_offset"], 152);
    assert_eq!(started["goid_offset_source"], "nearest_release");
}

#[test]
fn a_stripped_binary_is_named_from_gopclntab_go1_19() {
    reports_a_race_of(Go::V1_19, "go1.19.8", Build::Stripped, (152, "table"));
}

#[test]
fn a_stripped_binary_is_named_from_gopclntab_go1_24() {
    reports_a_race_of(Go::V1_24, "go1.24.4", Build::Stripped, (160, "table"));
}

#[test]
fn a_stripped_binary_is_named_from_gopclntab_go1_25() {
    reports_a_race_of(Go::V1_25, "go1.25.12", Build::Stripped, (152, "table"));
}

#[test]
fn a_stripped_binary_is_named_from_gopclntab_go1_26() {
    reports_a_race_of(Go::V1_26, "go1.26.10", Build::Stripped, (152, "table"));
}

/// A PIE build loaded away from its link address: frames named at the load address.
fn a_pie_binary_is_symbolised_at_its_load_address(go: Go) {
    let run = reports_a_race_before_the_crash(&mapwriters(go, Build::Pie));
    let race = run.of_kind("go_map_concurrent_write")[0];
    let entry = hex(race["writers"][0]["stack"][0]["addr"].as_str().unwrap());
    let hook = run.events[0]["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["function"] == race["writers"][0]["function"])
        .unwrap();
    assert_ne!(
        entry,
        hex(hook["entry"].as_str().unwrap()),
        "the binary was loaded away from its link address"
    );
}

#[test]
fn a_pie_binary_is_symbolised_at_its_load_address_go1_19() {
    a_pie_binary_is_symbolised_at_its_load_address(Go::V1_19);
}

#[test]
fn a_pie_binary_is_symbolised_at_its_load_address_go1_24() {
    a_pie_binary_is_symbolised_at_its_load_address(Go::V1_24);
}

#[test]
fn a_pie_binary_is_symbolised_at_its_load_address_go1_25() {
    a_pie_binary_is_symbolised_at_its_load_address(Go::V1_25);
}

#[test]
fn a_pie_binary_is_symbolised_at_its_load_address_go1_26() {
    a_pie_binary_is_symbolised_at_its_load_address(Go::V1_26);
}

#[test]
fn a_pie_binary_is_symbolised_at_its_load_address_go1_27() {
    a_pie_binary_is_symbolised_at_its_load_address(Go::V1_27);
}

/// Correct programs with a million map writes each: not one report.
fn correct_programs_get_no_reports(go: Go) {
    let program = mapwriters(go, Build::Plain);
    // sync.Map keeps new keys in a Go map until 1.24, where it became a hash trie.
    let sync_map_writes = if go == Go::V1_19 { 4096 } else { 0 };
    for (mode, min_writes) in [
        ("mutex", 1_000_000),
        ("local", 1_000_000),
        ("syncmap", sync_map_writes),
    ] {
        let run = go_maps(&program, &[mode, "250000"]);
        assert_eq!(run.status.code(), Some(0), "{mode}: {}", run.stderr);
        assert!(
            run.of_kind("go_map_concurrent_write").is_empty(),
            "{mode}: a false report"
        );
        assert!(
            run.of_kind("go_runtime_crash").is_empty(),
            "{mode}: a false crash"
        );
        let entered = counter(&run, "writes_entered");
        assert!(
            entered >= min_writes,
            "{mode}: only {entered} writes were seen"
        );
        assert_eq!(counter(&run, "races"), 0, "{mode}");
        assert_eq!(
            counter(&run, "writers_expired"),
            0,
            "{mode}: no write outlived the TTL"
        );
        assert_eq!(
            entered,
            counter(&run, "writes_returned") + counter(&run, "reentries"),
            "{mode}: every write entered returned (stack growth re-enters without returning twice)"
        );
    }
}

#[test]
fn mutex_sync_map_and_local_maps_get_no_reports_go1_19() {
    correct_programs_get_no_reports(Go::V1_19);
}

#[test]
fn mutex_sync_map_and_local_maps_get_no_reports_go1_24() {
    correct_programs_get_no_reports(Go::V1_24);
}

#[test]
fn mutex_sync_map_and_local_maps_get_no_reports_go1_25() {
    correct_programs_get_no_reports(Go::V1_25);
}

#[test]
fn mutex_sync_map_and_local_maps_get_no_reports_go1_26() {
    correct_programs_get_no_reports(Go::V1_26);
}

#[test]
fn mutex_sync_map_and_local_maps_get_no_reports_go1_27() {
    correct_programs_get_no_reports(Go::V1_27);
}

/// A panic inside a map write (assignment to a nil map) unwinds past its return
/// instructions: the gopanic hook closes it, so the next goroutine's write to the
/// same (nil) map is no race.
#[test]
fn a_panic_inside_a_map_write_closes_it_go1_19() {
    let run = go_maps(&mapwriters(Go::V1_19, Build::Plain), &["nilpanic", "5"]);
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    let panics = run.of_kind("go_runtime_crash");
    assert_eq!(panics.len(), 5);
    for panic in panics {
        assert_eq!(panic["kind"], "panic");
        assert_eq!(panic["in_map_write"]["map"], "0x0");
        assert_eq!(panic["in_map_write"]["operation"], "assign");
        assert_eq!(
            symbols(&panic["stack"])[..3],
            [
                "runtime.gopanic",
                "runtime.mapassign_faststr",
                "main.nilMapWriter"
            ]
        );
    }
    assert!(run.of_kind("go_map_concurrent_write").is_empty());
    assert_eq!(counter(&run, "writes_closed_by_panic"), 5);
}

/// `--pid`: attach to a Go program that is already running (through /proc/PID/exe).
#[test]
fn attaches_to_a_running_go_process_by_pid_go1_24() {
    let mut program = Command::new(mapwriters(Go::V1_24, Build::Plain))
        .arg("race-on-input")
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = program.id().to_string();
    let mut agent = Agent::start(&["go-maps", "--pid", &pid]);
    let started = agent.first("go_maps_started", |e| e["event"] == "go_maps_started");
    assert_eq!(started["pid"].as_u64(), Some(u64::from(program.id())));
    assert!(started["command"].is_null());
    writeln!(program.stdin.as_mut().unwrap()).unwrap();
    assert_eq!(program.wait().unwrap().code(), Some(2));
    let run = agent.wait();
    assert_eq!(
        run.status.code(),
        Some(0),
        "the agent ends with its target: {}",
        run.stderr
    );
    let race = run.of_kind("go_map_concurrent_write");
    assert!(!race.is_empty(), "{}", run.stderr);
    assert!(
        run.of_kind("go_runtime_crash")
            .iter()
            .any(|c| c["message"] == "concurrent map writes")
    );
}

/// Signals are caught before `go_maps_started` is written (they were caught after it,
/// so a SIGTERM right after it could end the agent without its final stats).
#[test]
fn sigterm_right_after_go_maps_started_ends_with_go_maps_stopped_go1_24() {
    let mut program = Command::new(mapwriters(Go::V1_24, Build::Plain))
        .arg("race-on-input")
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = program.id().to_string();
    let mut agent = Agent::start(&["go-maps", "--pid", &pid]);
    agent.wait_for("go_maps_started", |e| e["event"] == "go_maps_started");
    assert_eq!(unsafe { libc::kill(agent.pid() as i32, libc::SIGTERM) }, 0);
    let run = agent.wait();
    program.kill().unwrap();
    program.wait().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", run.stderr);
    assert_eq!(run.events.last().unwrap()["event"], "go_maps_stopped");
}

#[test]
fn refuses_a_program_that_is_not_go() {
    let out = Command::new(AGENT)
        .args(["go-maps", "--"])
        .arg(workload())
        .arg("mmap")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one sentence: {stderr}");
    assert!(
        stderr.contains(
            "is not a Go program (it has no .go.buildinfo section); go-maps audits Go binaries only"
        ),
        "{stderr}"
    );
    // --pid of a running process that is not Go: this test binary.
    let out = Command::new(AGENT)
        .args(["go-maps", "--pid", &std::process::id().to_string()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a Go program"));
}

#[test]
fn go_maps_needs_exactly_one_target() {
    for args in [
        &["go-maps"][..],
        &["go-maps", "--pid", "1", "--", "/bin/true"],
    ] {
        let out = Command::new(AGENT).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with("map-audit: ") && stderr.lines().count() == 1,
            "{stderr}"
        );
    }
}

/// `--crash-only`'s one crash event for a run of `mapwriters MODE` that ends with Go's
/// fatal error exit code and one of `messages` on stderr: the event's threads checked,
/// the crashing one returned.
fn crash_only(program: &Path, mode: &str, messages: &[&str]) -> (Run, Value, Value) {
    // A race that did not end in a throw (mapwriters exits 3 after 10 s: a CI run's
    // writers once spun for minutes in the map they had corrupted) is run again.
    let run = (0..3)
        .map(|_| {
            run_agent(&[
                "go-maps",
                "--crash-only",
                "--",
                program.to_str().unwrap(),
                mode,
            ])
        })
        .find(|run| run.status.code() != Some(RACE_WITHOUT_CRASH))
        .expect("the race ended in a throw in none of 3 runs");
    assert_eq!(run.status.code(), Some(2), "stderr:\n{}", run.stderr);
    assert!(
        messages.iter().any(|m| run.stderr.contains(m)),
        "{}",
        run.stderr
    );
    let started = &run.events[0];
    assert_eq!(started["mode"], "crash_only");
    assert!(
        started["hooks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| ["fatal", "fatal_panic"].contains(&h["operation"].as_str().unwrap())),
        "no map write is hooked: {started}"
    );
    // A capture per stop: a second thread reaching a fatal path before the process
    // was let go gets an event pointing to the capture; one reaching it after (the
    // runtime was still crashing) is held and read again.
    let crashes = run.of_kind("go_runtime_crash");
    let (captured, joined): (Vec<&Value>, Vec<&Value>) =
        crashes.iter().partition(|c| c["threads_captured"].is_u64());
    assert!(
        !captured.is_empty(),
        "a capture: {crashes:?}\n{}",
        run.stderr
    );
    for crash in &joined {
        assert!(
            crash["threads_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("its stop joined the one of thread")),
            "{crash}"
        );
    }
    let crash = captured[0].clone();
    let threads = threads_of(&run, &crash);
    assert_eq!(
        crash["threads_captured"].as_u64(),
        Some(threads.len() as u64),
        "a go_crash_thread event per thread read: {crash}"
    );
    let crashing: Vec<&Value> = threads
        .iter()
        .copied()
        .filter(|t| t["crashing"] == true)
        .collect();
    assert_eq!(crashing.len(), 1, "one crashing thread: {crash}");
    assert_eq!(crashing[0]["tid"], crash["tid"]);
    // Held at the fatal path, it is in the crashing goroutine; a thread another
    // crash's stop caught later may have moved on to its system or signal stack.
    if crashing[0]["stack"][0]["addr"] == crash["stack"][0]["addr"] {
        assert_eq!(crashing[0]["goid"], crash["goid"], "{crash}");
    }
    // Every walk ends where the runtime's traceback ends (a stack's start or switch),
    // not at an address in no function; or, cut in C code (cgo), says so.
    let ends = map_audit::commands::go_maps::go_unwind::STACK_ENDS;
    for thread in threads {
        let stack = symbols(&thread["stack"]);
        let last = thread["stack"].as_array().unwrap().last().unwrap();
        let in_c = last["module"].as_str() != program.to_str();
        assert!(
            thread["stack_truncated"] == in_c && (in_c || ends.contains(stack.last().unwrap())),
            "the walk reaches the start of the thread's stack, or is cut in C code: {stack:?}"
        );
    }
    let stopped = run.events.last().unwrap();
    assert_eq!(
        stopped["counters"]["agent"]["crash_captures"].as_u64(),
        Some(captured.len() as u64),
        "{stopped}"
    );
    assert_eq!(
        stopped["counters"]["kernel"]["crash_stops"].as_u64(),
        Some(crashes.len() as u64),
        "{stopped}"
    );
    assert_eq!(
        stopped["counters"]["agent"]["threads_uncaptured"], 0,
        "{stopped}"
    );
    let crashing = crashing[0].clone();
    (run, crash, crashing)
}

/// The `go_crash_thread` events of `crash`'s capture: its pid and thread, and its
/// time (a thread that reaches a fatal path again after a capture let the process go
/// is captured again, with the same tid).
fn threads_of<'a>(run: &'a Run, crash: &Value) -> Vec<&'a Value> {
    run.of_kind("go_crash_thread")
        .into_iter()
        .filter(|t| {
            t["pid"] == crash["pid"] && t["crash_tid"] == crash["tid"] && t["ts"] == crash["ts"]
        })
        .collect()
}

/// Whether the run names `function` on another thread than the capture's crashing one:
/// in the capture, or in the event of a second thread that reached the fatal path.
fn other_thread_in(run: &Run, crash: &Value, function: &str) -> bool {
    let in_capture = threads_of(run, crash)
        .iter()
        .any(|t| t["crashing"] == false && symbols(&t["stack"]).contains(&function));
    let joined = run
        .of_kind("go_runtime_crash")
        .iter()
        .any(|c| c["threads_captured"].is_null() && symbols(&c["stack"]).contains(&function));
    in_capture || joined
}

/// The crash of two writers, `--crash-only`: the crashing goroutine is in one writer,
/// and over 20 runs another thread is caught in the other writer. Prints the figure;
/// at least 14 of 20 (the bar) passes.
fn crash_only_names_the_other_writer(go: Go) {
    let program = mapwriters(go, Build::Plain);
    let mut named = 0;
    for _ in 0..20 {
        // A race may also corrupt the map first: Go then dies of that ("bad map
        // state", a fault), through the same fatal paths.
        let (run, crash, crashing) = crash_only(&program, "race", &["fatal error: ", "SIGSEGV"]);
        if run.stderr.contains("fatal error: concurrent map writes") {
            assert_eq!(crash["kind"], "fatal");
            assert_eq!(crash["message"], "concurrent map writes");
        }
        // The stack the uprobe took at the fatal path's entry; after a fault it may
        // stop at the signal frame, so the crashing thread's own walk counts too.
        let stack = symbols(&crash["stack"]);
        assert!(
            ["runtime.fatal", "runtime.throw", "runtime.fatalpanic"].contains(&stack[0]),
            "{stack:?}"
        );
        let walked = symbols(&crashing["stack"]);
        let crashed_in = |f: &str| stack.contains(&f) || walked.contains(&f);
        let (mine, other) = if crashed_in("main.raceWriterA") {
            ("main.raceWriterA", "main.raceWriterB")
        } else {
            ("main.raceWriterB", "main.raceWriterA")
        };
        assert!(crashed_in(mine), "{stack:?} / {walked:?}");
        named += u32::from(other_thread_in(&run, &crash, other));
    }
    eprintln!("{go:?}: --crash-only named the other writer in {named} of 20 runs");
    assert!(named >= 14, "the other writer named in {named} of 20 runs");
}

#[test]
fn crash_only_names_the_other_writer_go1_19() {
    crash_only_names_the_other_writer(Go::V1_19);
}

#[test]
fn crash_only_names_the_other_writer_go1_27() {
    crash_only_names_the_other_writer(Go::V1_27);
}

#[test]
fn crash_only_reports_a_read_racing_a_write_go1_24() {
    let program = mapwriters(Go::V1_24, Build::Plain);
    let (run, crash, crashing) = crash_only(
        &program,
        "readwrite",
        &["fatal error: concurrent map read and map write"],
    );
    assert_eq!(crash["message"], "concurrent map read and map write");
    let stack = symbols(&crashing["stack"]);
    assert!(
        stack.contains(&"main.readWriterB"),
        "the reader throws: {stack:?}"
    );
    assert!(
        other_thread_in(&run, &crash, "main.readWriterA"),
        "the writer is caught: {crash}"
    );
}

/// Crashes outside the map runtime get the same all-threads report: a panic nothing
/// recovers (with its message) and a fatal error of package sync.
#[test]
fn crash_only_reports_other_crashes_with_every_thread_go1_24() {
    let program = mapwriters(Go::V1_24, Build::Pie);
    let (_, crash, crashing) = crash_only(&program, "nilmap", &["assignment to entry in nil map"]);
    assert_eq!(crash["kind"], "unrecovered_panic");
    assert_eq!(crash["message"], "assignment to entry in nil map");
    let stack = symbols(&crashing["stack"]);
    assert_eq!(stack[0], "runtime.fatalpanic", "{stack:?}");
    assert!(stack.contains(&"main.nilMapPanic"), "{stack:?}");
    assert!(crash["threads_captured"].as_u64() > Some(1), "{crash}");

    let (_, crash, crashing) = crash_only(&program, "unlock", &["sync: unlock of unlocked mutex"]);
    assert_eq!(crash["kind"], "fatal");
    assert_eq!(crash["message"], "sync: unlock of unlocked mutex");
    assert!(symbols(&crashing["stack"]).contains(&"main.badUnlock"));
}

/// A thread blocked in C code (cgo) is named by the same symboliser as `run`'s
/// stacks: libc's `pause` from libc's symbols, not left as a bare address.
#[test]
fn crash_only_names_a_thread_waiting_in_c_code_go1_24() {
    let program = mapwriters(Go::V1_24, Build::CgoWait);
    let (run, _, _) = crash_only(&program, "", &["assignment to entry in nil map"]);
    let threads = run.of_kind("go_crash_thread");
    let in_libc = threads
        .iter()
        .flat_map(|t| t["stack"].as_array().unwrap())
        .find(|f| {
            f["module"]
                .as_str()
                .is_some_and(|m| m.ends_with("/libc.so.6"))
        })
        .unwrap_or_else(|| panic!("no thread in libc: {threads:#?}"));
    assert!(
        in_libc["symbol"]
            .as_str()
            .is_some_and(|s| s.contains("pause")),
        "{in_libc}"
    );
}

/// A stack overflow is thrown on the thread's system stack (`morestack` -> `newstack`):
/// the walk follows the switch into the overflowing goroutine, with the layout read
/// from each release's table (stripped builds) for both of its rows.
fn crash_only_follows_a_switch_to_the_system_stack(go: Go) {
    let program = mapwriters(go, Build::Stripped);
    let run = run_agent(&[
        "go-maps",
        "--crash-only",
        "--",
        program.to_str().unwrap(),
        "overflow",
    ]);
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(
        run.stderr.contains("fatal error: stack overflow"),
        "{}",
        run.stderr
    );
    let crash = run
        .of_kind("go_runtime_crash")
        .into_iter()
        .find(|c| c["threads_captured"].is_u64())
        .unwrap_or_else(|| panic!("no capture: {}", run.stderr));
    assert_eq!(crash["message"], "stack overflow");
    let crashing = *threads_of(&run, crash)
        .iter()
        .find(|t| t["crashing"] == true)
        .unwrap();
    assert_eq!(
        crashing["goid"], 0,
        "thrown on the system stack: {crashing}"
    );
    let stack = symbols(&crashing["stack"]);
    let switch = stack
        .iter()
        .position(|&f| f == "runtime.morestack")
        .unwrap_or_else(|| panic!("{stack:?}"));
    assert!(stack[..switch].contains(&"runtime.newstack"), "{stack:?}");
    assert!(
        stack[switch + 1..]
            .iter()
            .all(|&f| f == "main.deepRecursion"),
        "past the switch, the goroutine that overflowed: {stack:?}"
    );
    assert!(stack.len() > switch + 1, "{stack:?}");
    assert_eq!(
        crashing["stack_truncated"], true,
        "the recursion is deeper than 64"
    );
}

#[test]
fn crash_only_follows_a_switch_to_the_system_stack_go1_24() {
    crash_only_follows_a_switch_to_the_system_stack(Go::V1_24);
}

#[test]
fn crash_only_follows_a_switch_to_the_system_stack_go1_27() {
    crash_only_follows_a_switch_to_the_system_stack(Go::V1_27);
}

/// `--crash-only` reports nothing on correct programs, recovered panics included.
#[test]
fn crash_only_is_silent_on_programs_that_do_not_crash_go1_27() {
    let program = mapwriters(Go::V1_27, Build::Plain);
    for mode in [["mutex", "20000"], ["nilpanic", "50"]] {
        let run = run_agent(&[
            "go-maps",
            "--crash-only",
            "--",
            program.to_str().unwrap(),
            mode[0],
            mode[1],
        ]);
        assert_eq!(run.status.code(), Some(0), "{mode:?}: {}", run.stderr);
        assert!(run.of_kind("go_runtime_crash").is_empty(), "{mode:?}");
        assert_eq!(counter(&run, "crashes"), 0);
        assert_eq!(counter(&run, "writes_entered"), 0, "no map write is hooked");
    }
}

/// The agent killed while it holds the crashed process: the kernel lets the threads
/// go, and the runtime ends the process as it would have.
#[test]
fn agent_killed_mid_capture_leaves_no_process_stopped_go1_24() {
    let mut program = Command::new(mapwriters(Go::V1_24, Build::Plain))
        .arg("race-on-input")
        .stdin(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = program.id();
    let mut agent = Command::new(AGENT)
        .args(["go-maps", "--crash-only", "--pid", &pid.to_string()])
        .env("MAP_AUDIT_TEST_CAPTURE_PAUSE_MS", "60000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(agent.stdout.as_mut().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.contains("go_maps_started"), "{first}");
    writeln!(program.stdin.as_mut().unwrap()).unwrap();
    // Held: in ptrace-stop ('t'), with the agent's SIGCONT sent (pending in the shared
    // queue until the threads are let go), so the agent pauses in its capture. Killed
    // before the SIGCONT, the process would stay stopped: the few milliseconds the
    // docs name.
    let held = (0..500).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let read = |file: &str| std::fs::read_to_string(format!("/proc/{pid}/{file}"));
        let traced = read("stat")
            .unwrap_or_default()
            .rsplit(") ")
            .next()
            .is_some_and(|s| s.starts_with('t'));
        let sigcont_pending = read("status").unwrap_or_default().lines().any(|l| {
            l.strip_prefix("ShdPnd:\t")
                .and_then(|mask| u64::from_str_radix(mask, 16).ok())
                .is_some_and(|mask| mask & (1 << (libc::SIGCONT - 1)) != 0)
        });
        traced && sigcont_pending
    });
    assert!(held, "the crashing process was never held by the agent");
    agent.kill().unwrap();
    agent.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = program.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the process stayed stopped after the agent died"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(2), "it crashed as it would have");
}
