//! `map-audit watch` on real programs: hardware watchpoints on a global written by
//! threads that start after the watch (as a command, and by pid), a shared library's
//! global by symbol, an address by number, and the errors a user meets. Stacks are
//! checked against perf's DWARF unwinder on the same watchpoint (`perf record -e
//! mem:ADDR:w:u --call-graph dwarf`). The workload is built `-O2` without frame
//! pointers, as users build.

mod common;

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
};

use common::{Agent, Run, c_workload, hex, run_agent, stack_symbols};
use serde_json::Value;

/// Writes per thread.
const WRITES: u64 = 2000;

fn workload() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        c_workload(
            "MAP_AUDIT_TEST_WATCH",
            "watch.c",
            "watch",
            &["-O2", "-g", "-pthread"],
        )
    })
}

/// The shared library with `lib_counter`, built as distributions build libraries.
fn library() -> PathBuf {
    c_workload(
        "MAP_AUDIT_TEST_WATCH_LIB",
        "watch_lib.c",
        "libwatch.so",
        &["-O2", "-g", "-shared", "-fPIC"],
    )
}

/// `map-audit watch OPTIONS -- workload MODE...`, run to its end.
fn watch_workload(options: &[&str], mode: &[&str]) -> Run {
    let mut args = vec!["watch"];
    args.extend_from_slice(options);
    args.extend(["--", workload().to_str().unwrap()]);
    args.extend_from_slice(mode);
    run_agent(&args)
}

/// Writes by the innermost function, summed over the events of watch `watch`.
fn writes_by_writer(run: &Run, watch: u64) -> BTreeMap<String, u64> {
    let mut writes = BTreeMap::new();
    for e in run.of_kind("write_watch") {
        if e["watch"] != watch {
            continue;
        }
        let writer = stack_symbols(e).first().cloned().unwrap_or_default();
        *writes.entry(writer).or_default() += e.get("count").map_or(1, |c| c.as_u64().unwrap());
    }
    writes
}

/// watch_hits = delivered + lost, and delivered = what the events stand for.
fn assert_watch_accounting(run: &Run) {
    let counters = &run.stopped()["counters"];
    let (kernel, agent) = (&counters["kernel"], &counters["agent"]);
    let n = |v: &Value| v.as_u64().unwrap();
    assert_eq!(
        n(&kernel["watch_hits"]),
        n(&agent["watch_hits_delivered"])
            + n(&kernel["watch_hits_lost_ringbuf_full"])
            + n(&kernel["watch_hits_rate_limited"]),
        "{counters}"
    );
    let events = run.of_kind("write_watch");
    let represented: u64 = events
        .iter()
        .map(|e| e.get("count").map_or(1, |c| c.as_u64().unwrap()))
        .sum();
    assert_eq!(n(&agent["watch_hits_delivered"]), represented);
    assert_eq!(n(&agent["write_watch_events"]), events.len() as u64);
    assert_eq!(
        n(&kernel["faults_matched"]),
        0,
        "watch attaches no fault hook"
    );
}

fn watch_started(run: &Run, watch: u64) -> &Value {
    run.of_kind("watch_started")
        .into_iter()
        .find(|e| e["watch"] == watch)
        .unwrap_or_else(|| panic!("no watch_started for watch {watch}"))
}

#[test]
fn threads_started_after_the_watch_are_attributed_exactly() {
    let run = watch_workload(&["--symbol", "counter"], &["run", &WRITES.to_string()]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let started = watch_started(&run, 0);
    assert_eq!(started["symbol"], "counter");
    assert_eq!(started["length"], 8);
    assert_eq!(started["threads"], 1, "set at exec, before any thread");
    assert_eq!(started["module"], workload().to_str().unwrap());
    let counter = started["address"].clone();
    assert_eq!(
        writes_by_writer(&run, 0),
        BTreeMap::from([
            ("bump_by_one".into(), WRITES),
            ("bump_by_two".into(), WRITES)
        ]),
    );
    let events = run.of_kind("write_watch");
    // `neighbour` is written in the same loops: only `counter` is reported.
    assert!(events.iter().all(|e| e["address"] == counter));
    for e in &events {
        let symbols = stack_symbols(e);
        let thread = if symbols[0] == "bump_by_one" {
            "thread_one"
        } else {
            "thread_two"
        };
        assert_eq!(
            symbols,
            [symbols[0].as_str(), thread, "start_thread", "clone3"]
        );
        assert_eq!(e["stack_end"], "complete");
        assert_ne!(e["tid"], e["pid"], "written by the threads");
    }
    // The last write leaves 3 x WRITES.
    let last = events
        .iter()
        .max_by_key(|e| e["last_ts"].as_str().unwrap().to_string())
        .unwrap();
    assert_eq!(hex(last["value"].as_str().unwrap()), 3 * WRITES);
    assert_watch_accounting(&run);
}

#[test]
fn stacks_match_perf_on_the_same_watchpoint() {
    // perf needs the address before exec: a position-dependent build.
    let program = c_workload(
        "MAP_AUDIT_TEST_WATCH_NO_PIE",
        "watch.c",
        "watch-no-pie",
        &["-O2", "-g", "-pthread", "-no-pie"],
    );
    let writes = "200";
    let run = run_agent(&[
        "watch",
        "--every-event",
        "--symbol",
        "counter",
        "--",
        program.to_str().unwrap(),
        "run",
        writes,
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let address = watch_started(&run, 0)["address"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ours: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for e in run.of_kind("write_watch") {
        *ours.entry(stack_symbols(e)).or_default() += 1;
    }
    // The agent loses none.
    assert!(ours.values().all(|&n| n == 200), "{ours:?}");
    // perf may lose samples, once under CI's load a whole thread's (its watchpoint
    // competes for the CPUs' four debug registers with the other tests'): up to three
    // runs, each of whose stacks must be one of ours, until one has them all.
    let mut theirs = BTreeMap::new();
    for _ in 0..3 {
        theirs = perf_chains(&program, &address, writes);
        assert!(
            theirs.keys().all(|chain| ours.contains_key(chain)),
            "perf saw a stack map-audit did not: ours {ours:?}, perf {theirs:?}"
        );
        if theirs.len() == ours.len() {
            break;
        }
    }
    assert_eq!(
        ours.keys().collect::<Vec<_>>(),
        theirs.keys().collect::<Vec<_>>(),
        "map-audit's stacks (left) and perf's (right) differ"
    );
}

/// `perf record` on a user-mode write watchpoint at `address`: each sample's chain of
/// symbols, with how often it was seen.
fn perf_chains(program: &Path, address: &str, writes: &str) -> BTreeMap<Vec<String>, u64> {
    let data = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("perf-watch-{}.data", std::process::id()));
    let record = Command::new("perf")
        .args(["record", "-q", "-e"])
        .arg(format!("mem:{address}:w:u"))
        .args(["--call-graph", "dwarf", "-o"])
        .arg(&data)
        .arg("--")
        .arg(program)
        .args(["run", writes])
        .output()
        .expect("perf runs (linux-perf)");
    assert!(
        record.status.success(),
        "perf record failed:\n{}",
        String::from_utf8_lossy(&record.stderr)
    );
    let script = Command::new("perf")
        .args(["script", "-F", "ip,sym", "-i"])
        .arg(&data)
        .output()
        .unwrap();
    let mut chains = BTreeMap::new();
    for sample in String::from_utf8_lossy(&script.stdout).split("\n\n") {
        let chain: Vec<String> = sample
            .lines()
            .filter_map(|l| l.trim().split_once(' ').map(|(_, s)| s.trim().to_string()))
            .collect();
        if !chain.is_empty() {
            *chains.entry(chain).or_default() += 1;
        }
    }
    chains
}

#[test]
fn writes_over_the_rate_limit_are_counted() {
    let run = watch_workload(
        &[
            "--every-event",
            "--rate-limit",
            "100/s",
            "--symbol",
            "counter",
        ],
        &["run", &WRITES.to_string()],
    );
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let kernel = &run.stopped()["counters"]["kernel"];
    assert_eq!(kernel["watch_hits"], 2 * WRITES, "{kernel}");
    let limited = kernel["watch_hits_rate_limited"].as_u64().unwrap();
    // A full bucket (100) passes, then ~100/s: the threads take well under a second.
    assert!(limited >= 2 * WRITES - 200, "{kernel}");
    assert_eq!(
        run.of_kind("write_watch").len() as u64,
        2 * WRITES - limited
    );
    assert_watch_accounting(&run);
}

#[test]
fn writes_the_kernel_makes_are_counted_as_unreported() {
    let run = watch_workload(&["--symbol", "counter"], &["kernel", "50"]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    assert!(run.of_kind("write_watch").is_empty());
    let kernel = &run.stopped()["counters"]["kernel"];
    // One per store: /dev/zero's read clears the 8 bytes one store at a time here.
    let stores = kernel["watch_kernel_writes"].as_u64().unwrap();
    assert!(stores >= 50 && stores.is_multiple_of(50), "{kernel}");
    assert_watch_accounting(&run);
}

#[test]
fn report_and_pretty_output_show_watched_writes() {
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("watch-stream-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let writes = WRITES.to_string();
    let program = workload().to_str().unwrap();
    let run = run_agent(&[
        "watch",
        "--symbol",
        "counter",
        "-o",
        out.to_str().unwrap(),
        "--",
        program,
        "run",
        &writes,
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let report = Command::new(common::AGENT)
        .arg("report")
        .arg(&out)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(report.status.success(), "{text}");
    assert!(
        text.contains(&format!("{} watched writes in", 2 * WRITES)),
        "{text}"
    );
    for writer in [
        "counter: bump_by_one <- thread_one",
        "counter: bump_by_two <- thread_two",
    ] {
        let row = text
            .lines()
            .find(|l| l.contains(writer))
            .unwrap_or_else(|| panic!("{text}"));
        assert_eq!(
            row.split_whitespace().next(),
            Some(writes.as_str()),
            "{row}"
        );
    }
    let pretty = Command::new(common::AGENT)
        .args([
            "watch", "--format", "pretty", "--symbol", "counter", "--", program, "run", "10",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&pretty.stdout);
    assert!(pretty.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l.contains(" write_watch ")
            && l.contains("watch=0 counter")
            && l.contains("count=10 during=")
            && l.contains(" stack=bump_by_")),
        "{text}"
    );
}

/// `tests/go/watched.go` built by Debian's Go 1.19 (`cargo xtask test` installs it).
fn go_watched() -> PathBuf {
    let go = Path::new("/usr/lib/go-1.19/bin/go");
    assert!(
        go.exists(),
        "{} is missing: `cargo xtask test` installs golang-1.19-go",
        go.display()
    );
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let out = tmp.join(format!("watched-go-{}", std::process::id()));
    let status = Command::new(go)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go"))
        .env("GOROOT", "/usr/lib/go-1.19")
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", tmp.join("gocache"))
        .env("GOPATH", tmp.join("gopath"))
        .env("HOME", &tmp)
        .args(["build", "-o"])
        .arg(&out)
        .arg("watched.go")
        .status()
        .expect("go runs");
    assert!(status.success(), "building watched.go failed");
    out
}

#[test]
fn a_go_global_by_its_go_name() {
    let program = go_watched();
    let run = run_agent(&[
        "watch",
        "--symbol",
        "main.counter",
        "--",
        program.to_str().unwrap(),
        &WRITES.to_string(),
    ]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    assert_eq!(watch_started(&run, 0)["symbol"], "main.counter");
    assert_eq!(
        writes_by_writer(&run, 0),
        BTreeMap::from([
            ("main.bumpOne".into(), WRITES),
            ("main.bumpTwo".into(), WRITES)
        ]),
    );
    // Go's leaves keep no frame pointer; its .debug_frame (compressed) gives the caller.
    for e in run.of_kind("write_watch") {
        let symbols = stack_symbols(e);
        let closure = if symbols[0] == "main.bumpOne" {
            "main.main.func1"
        } else {
            "main.main.func2"
        };
        assert_eq!(symbols, [symbols[0].as_str(), closure, "runtime.goexit"]);
        assert_eq!(e["stack_end"], "complete");
    }
    assert_watch_accounting(&run);
}

/// The workload waiting for SIGUSR1, with the addresses it printed.
struct Waiting {
    child: Child,
    addresses: BTreeMap<String, String>,
}

impl Waiting {
    fn start(lib: Option<&Path>) -> Self {
        let mut command = Command::new(workload());
        command.args(["wait", &WRITES.to_string()]);
        if let Some(lib) = lib {
            command.arg(lib);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("workload runs");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("ready"), "{line}");
        let addresses = line
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self { child, addresses }
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Starts the threads and waits for the workload to end.
    fn go(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGUSR1) };
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn by_pid_threads_started_after_attach_are_covered() {
    let mut waiting = Waiting::start(None);
    let mut agent = Agent::start(&["watch", "--pid", &waiting.pid(), "--symbol", "counter"]);
    agent.wait_for("watch_started", |e| e["event"] == "watch_started");
    waiting.go();
    // The watch ends with the process.
    let run = agent.wait();
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    assert_eq!(
        watch_started(&run, 0)["address"],
        waiting.addresses["counter"]
    );
    assert_eq!(
        writes_by_writer(&run, 0),
        BTreeMap::from([
            ("bump_by_one".into(), WRITES),
            ("bump_by_two".into(), WRITES)
        ]),
    );
    assert_watch_accounting(&run);
}

#[test]
fn a_library_global_by_symbol_and_an_address_by_number() {
    let lib = library();
    let mut waiting = Waiting::start(Some(&lib));
    let neighbour = format!("{}:8", waiting.addresses["neighbour"]);
    let agent = Agent::start(&[
        "watch",
        "--pid",
        &waiting.pid(),
        "--symbol",
        "lib_counter",
        "--address",
        &neighbour,
    ]);
    agent.wait_for("watch_started", |e| e["event"] == "watch_started");
    waiting.go();
    let run = agent.stop();
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    let in_lib = watch_started(&run, 0);
    assert_eq!(in_lib["address"], waiting.addresses["lib_counter"]);
    assert_eq!(in_lib["module"], lib.to_str().unwrap());
    assert_eq!(watch_started(&run, 1)["symbol"], Value::Null);
    assert_eq!(
        writes_by_writer(&run, 0),
        BTreeMap::from([("lib_bump".into(), WRITES)])
    );
    for e in run
        .of_kind("write_watch")
        .iter()
        .filter(|e| e["watch"] == 0)
    {
        assert_eq!(
            stack_symbols(e)[..2],
            ["lib_bump".to_string(), "main".to_string()]
        );
        assert_eq!(e["symbol"], "lib_counter");
    }
    assert_eq!(
        writes_by_writer(&run, 1),
        BTreeMap::from([
            ("bump_by_one".into(), WRITES),
            ("bump_by_two".into(), WRITES)
        ]),
    );
    assert_watch_accounting(&run);
}

/// `perf_event_attr` up to `sample_max_stack` (PERF_ATTR_SIZE_VER5, 112 bytes).
#[repr(C)]
#[derive(Default)]
struct PerfEventAttr {
    type_: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    bp_addr: u64,
    bp_len: u64,
    branch_sample_type: u64,
    sample_regs_user: u64,
    sample_stack_user: u32,
    clockid: i32,
    sample_regs_intr: u64,
    aux_watermark: u32,
    sample_max_stack: u16,
    reserved: u16,
}
const _: () = assert!(size_of::<PerfEventAttr>() == 112);

#[test]
fn all_four_debug_registers_taken_is_one_sentence() {
    let waiting = Waiting::start(None);
    let counter = hex(&waiting.addresses["counter"]);
    // Another perf user holds all four registers on the process's thread.
    let held: Vec<i32> = (0..4)
        .map(|i| {
            let attr = PerfEventAttr {
                type_: 5, // PERF_TYPE_BREAKPOINT
                size: 112,
                sample_period: 1,
                bp_type: 2, // HW_BREAKPOINT_W
                bp_addr: counter + 8 * (i % 2),
                bp_len: 8,
                ..Default::default()
            };
            let fd = unsafe {
                libc::syscall(
                    libc::SYS_perf_event_open,
                    &attr,
                    waiting.child.id() as i32,
                    -1,
                    -1,
                    8, // PERF_FLAG_FD_CLOEXEC
                )
            } as i32;
            assert!(
                fd >= 0,
                "breakpoint {i}: {}",
                std::io::Error::last_os_error()
            );
            fd
        })
        .collect();
    let run = run_agent(&["watch", "--pid", &waiting.pid(), "--symbol", "counter"]);
    for fd in held {
        unsafe { libc::close(fd) };
    }
    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("no free debug register"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_unknown_symbol_names_near_matches_and_the_command_never_runs() {
    let run = watch_workload(&["--symbol", "countr"], &["run", "1"]);
    assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
    assert_eq!(run.stderr.trim().lines().count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("did you mean `counter`"),
        "{}",
        run.stderr
    );
    assert!(run.events.is_empty(), "nothing printed: {:?}", run.events);
}

#[test]
fn bad_lengths_and_alignment_are_refused_before_anything_loads() {
    for (args, sentence) in [
        (["--address", "0x1004:8"], "not aligned to its length 8"),
        (["--symbol", "counter:3"], "not 1, 2, 4 or 8 bytes"),
    ] {
        let mut all = vec!["watch", "--pid", "1"];
        all.extend(args);
        let run = run_agent(&all);
        assert_eq!(run.status.code(), Some(1), "stderr:\n{}", run.stderr);
        assert!(run.stderr.contains(sentence), "{}", run.stderr);
    }
}
