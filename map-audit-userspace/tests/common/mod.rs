//! Shared pieces of the integration tests: the C workload, running the real agent as a
//! child process, and checked access to the JSON lines it prints. Every line the agent
//! prints is validated against `schema/map-audit-v1.schema.json`.
#![allow(dead_code)]

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, OnceLock},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

pub mod debuginfod_server;
pub mod go_programs;
pub mod split;
pub mod test_image;

pub const AGENT: &str = env!("CARGO_BIN_EXE_map-audit");

/// How long any one agent run may take before the test fails: 90 s, or
/// `MAP_AUDIT_TEST_TIMEOUT_SECS` (`cargo xtask vm-test` raises it: its guests are
/// emulated, several times slower than the host).
fn run_timeout() -> Duration {
    static TIMEOUT: OnceLock<Duration> = OnceLock::new();
    *TIMEOUT.get_or_init(|| {
        let secs = std::env::var("MAP_AUDIT_TEST_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(90);
        Duration::from_secs(secs)
    })
}

/// The C workload, compiled once per test binary with frame pointers, or the one
/// `MAP_AUDIT_TEST_WORKLOAD` names (prebuilt: `cargo xtask vm-test` has no compiler in
/// its guests).
pub fn workload() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        c_workload(
            "MAP_AUDIT_TEST_WORKLOAD",
            "workload.c",
            "workload",
            &["-O0", "-g", "-fno-omit-frame-pointer"],
        )
    })
}

/// The "nothing drops out" workloads (`tests/workloads/dropouts.c`), built the way
/// users build: `-O2`, no frame pointers, threads; or the one
/// `MAP_AUDIT_TEST_DROPOUTS` names (prebuilt for the VM guests).
pub fn dropouts_workload() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        c_workload(
            "MAP_AUDIT_TEST_DROPOUTS",
            "dropouts.c",
            "dropouts",
            &["-O2", "-g", "-pthread"],
        )
    })
}

/// `tests/workloads/SOURCE` built with gcc `flags` as `NAME-PID` in the test target
/// folder, or the prebuilt program the environment variable `prebuilt` names.
pub fn c_workload(prebuilt: &str, source: &str, name: &str, flags: &[&str]) -> PathBuf {
    if let Some(prebuilt) = std::env::var_os(prebuilt) {
        return PathBuf::from(prebuilt);
    }
    let out =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let source = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/workloads")
        .join(source);
    let status = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "compiling {} failed", source.display());
    out
}

/// Whether this kernel has kprobes (its kprobe PMU): not on this project's CI host, yes
/// in the VM guests of `cargo xtask vm-test`.
pub fn kernel_has_kprobes() -> bool {
    Path::new("/sys/bus/event_source/devices/kprobe").exists()
}

fn schema() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        // Compiled in: the tests also run in VM guests without the source tree.
        let schema: Value =
            serde_json::from_str(include_str!("../../../schema/map-audit-v1.schema.json"))
                .expect("schema is JSON");
        jsonschema::validator_for(&schema).expect("schema compiles")
    })
}

/// Parses one output line and checks it against the schema; panics with the line.
pub fn parse_event(line: &str) -> Value {
    let event: Value =
        serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    let errors: Vec<String> = schema()
        .iter_errors(&event)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "event violates the schema: {errors:?}\n{line}"
    );
    assert!(line.len() <= 16 * 1024, "line longer than 16 KiB");
    event
}

/// Whether `event` satisfies the schema (for tests of the schema itself).
pub fn schema_accepts(event: &Value) -> bool {
    schema().is_valid(event)
}

/// A finished agent run.
pub struct Run {
    pub events: Vec<Value>,
    pub stderr: String,
    pub status: ExitStatus,
}

impl Run {
    pub fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }

    /// The `agent_stopped` event (exactly one, last).
    pub fn stopped(&self) -> &Value {
        let last = self.events.last().expect("the agent printed events");
        assert_eq!(
            last["event"], "agent_stopped",
            "last event is agent_stopped"
        );
        assert_eq!(self.of_kind("agent_stopped").len(), 1);
        last
    }

    /// `workload: KEY N` from the workload's stderr (the last such line).
    pub fn workload_number(&self, key: &str) -> u64 {
        let prefix = format!("workload: {key} ");
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .next_back()
            .unwrap_or_else(|| panic!("workload printed no `{key}` line; stderr:\n{}", self.stderr))
            .trim()
            .parse()
            .unwrap()
    }

    /// Faults reported at addresses in `[start, end)`, whose innermost frame is
    /// `symbol` (any when `None`).
    pub fn faults_in(&self, (start, end): (u64, u64), symbol: Option<&str>) -> u64 {
        self.of_kind("write_fault")
            .into_iter()
            .filter(|e| (start..end).contains(&hex(e["address"].as_str().unwrap())))
            .filter(|e| {
                symbol.is_none_or(|s| stack_symbols(e).first().map(String::as_str) == Some(s))
            })
            .map(|e| e.get("count").map_or(1, |c| c.as_u64().unwrap()))
            .sum()
    }

    /// Faults reported whose innermost frame is `symbol`.
    pub fn faults_by(&self, symbol: &str) -> u64 {
        self.faults_in((0, u64::MAX), Some(symbol))
    }

    /// Checks that the `writes` faults a workload made in `symbol` are all reported, or
    /// counted lost on the way (a ring buffer that filled while the machine was busy):
    /// no write vanishes silently. A failure shows the run's non-zero loss counters and
    /// the innermost frames of the other faults, so a CI log says where they went.
    pub fn assert_writes_reported(&self, symbol: &str, writes: u64) {
        let reported = self.faults_by(symbol);
        let kernel = &self.stopped()["counters"]["kernel"];
        let lost = kernel["faults_lost_ringbuf_full"].as_u64().unwrap()
            + kernel["faults_rate_limited"].as_u64().unwrap();
        if reported <= writes && reported + lost >= writes {
            return;
        }
        let mut elsewhere = std::collections::BTreeMap::<String, u64>::new();
        for fault in self.of_kind("write_fault") {
            let innermost = stack_symbols(fault).into_iter().next().unwrap_or_default();
            if innermost != symbol {
                *elsewhere.entry(innermost).or_default() += fault["count"].as_u64().unwrap_or(1);
            }
        }
        let counters = &self.stopped()["counters"];
        let nonzero: Vec<String> = ["kernel", "agent"]
            .iter()
            .flat_map(|side| {
                counters[side]
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(_, v)| v.as_u64().is_some_and(|n| n > 0))
                    .map(move |(k, v)| format!("{side}.{k}={v}"))
            })
            .collect();
        panic!(
            "{reported} faults in {symbol} for {writes} writes, {lost} counted lost; \
             other innermost frames: {elsewhere:?}; non-zero counters: {nonzero:?}"
        );
    }

    /// Follows every region's audited pages through the stream (mapped: in; made
    /// read-only: out; made writable again: in; unmapped: out) and checks that nothing
    /// is reported unmapped that was not in (no double report, no phantom piece), and,
    /// since the run's processes are all gone, that nothing is left in.
    pub fn assert_regions_close_once(&self) {
        use std::collections::{BTreeSet, HashMap};
        const PAGE: u64 = 4096;
        let mut live: HashMap<(u64, u64), BTreeSet<u64>> = HashMap::new();
        let range = |e: &Value| {
            (
                hex(e["range"]["start"].as_str().unwrap()) / PAGE,
                hex(e["range"]["end"].as_str().unwrap()) / PAGE,
            )
        };
        for e in &self.events {
            let Some(id) = e["region"]["id"].as_u64() else {
                continue;
            };
            let pages = live.entry((e["pid"].as_u64().unwrap(), id)).or_default();
            match e["event"].as_str() {
                Some("region_mapped") => {
                    let (start, end) = region_range(e);
                    pages.extend(start / PAGE..end / PAGE);
                }
                Some("region_protected") if e["new_prot"].as_str().unwrap().contains('w') => {
                    let (start, end) = range(e);
                    pages.extend(start..end);
                }
                Some("region_protected") | Some("region_unmapped") => {
                    let (start, end) = range(e);
                    for page in start..end {
                        assert!(
                            pages.remove(&page),
                            "region {id} reported leaving page {:#x} it was not in: {e}",
                            page * PAGE
                        );
                    }
                }
                _ => {}
            }
        }
        for ((pid, id), pages) in live {
            assert!(
                pages.is_empty(),
                "pid {pid}'s region {id} was never reported unmapped at {:#x}",
                pages.first().unwrap() * PAGE
            );
        }
    }

    /// `workload: KEY START END` from the workload's stderr.
    pub fn workload_range(&self, key: &str) -> (u64, u64) {
        let prefix = format!("workload: {key} ");
        let line = self
            .stderr
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| {
                panic!("workload printed no `{key}` line; stderr:\n{}", self.stderr)
            });
        let mut parts = line.split_whitespace().map(hex);
        (parts.next().unwrap(), parts.next().unwrap())
    }

    /// Checks that the kernel's tables were empty at the end (every process gone).
    pub fn assert_kernel_tables_empty(&self) {
        assert_eq!(
            self.stopped()["counters"]["table_entries"],
            serde_json::json!({"regions": 0, "scope": 0, "pending_calls": 0}),
            "the kernel tables are empty once every audited process is gone"
        );
    }

    /// Checks produced = delivered + lost for write faults and region records.
    pub fn assert_accounting(&self) {
        let counters = &self.stopped()["counters"];
        let (kernel, agent) = (&counters["kernel"], &counters["agent"]);
        let n = |v: &Value| v.as_u64().unwrap();
        assert_eq!(
            n(&kernel["faults_matched"]),
            n(&agent["faults_delivered"])
                + n(&kernel["faults_lost_ringbuf_full"])
                + n(&kernel["faults_rate_limited"])
                + n(&agent["faults_filtered_by_agent"]),
            "write faults: produced != delivered + lost + filtered: {counters}"
        );
        assert_eq!(
            n(&kernel["region_events"]) + n(&kernel["process_records"]),
            n(&agent["region_and_process_records_delivered"])
                + n(&kernel["region_events_lost_ringbuf_full"])
                + n(&kernel["process_records_lost_ringbuf_full"]),
            "region and process records: produced != delivered + lost: {counters}"
        );
        assert_eq!(
            n(&kernel["file_records"]),
            n(&agent["file_records_delivered"]) + n(&kernel["file_records_lost_ringbuf_full"]),
            "mapped-file records: produced != delivered + lost: {counters}"
        );
        assert_eq!(
            n(&kernel["msyncs"]),
            n(&agent["msyncs_delivered"])
                + n(&agent["msyncs_filtered_by_agent"])
                + n(&kernel["msyncs_lost_ringbuf_full"])
                + n(&kernel["msyncs_rate_limited"]),
            "msync records: produced != delivered + lost: {counters}"
        );
        assert_eq!(
            n(&kernel["cgroup_records"]),
            n(&agent["cgroup_records_delivered"]) + n(&kernel["cgroup_records_lost_ringbuf_full"]),
            "made-cgroup records: produced != delivered + lost: {counters}"
        );
        assert_eq!(
            n(&kernel["pages_dirtied"]),
            n(&agent["pages_dirtied_delivered"]) + n(&kernel["pages_dirtied_lost_ringbuf_full"]),
            "dirtied-page records: produced != delivered + lost: {counters}"
        );
        let syncs = self.of_kind("region_synced");
        assert_eq!(n(&agent["region_synced_events"]), syncs.len() as u64);
        let represented: u64 = syncs
            .iter()
            .map(|e| e.get("count").map_or(1, |c| c.as_u64().unwrap()))
            .sum();
        assert_eq!(n(&agent["msyncs_delivered"]), represented);
        let faults = self.of_kind("write_fault");
        assert_eq!(n(&agent["write_fault_events"]), faults.len() as u64);
        let represented: u64 = faults
            .iter()
            .map(|e| e.get("count").map_or(1, |c| c.as_u64().unwrap()))
            .sum();
        assert_eq!(
            n(&agent["faults_delivered"]),
            represented,
            "delivered = the faults the events stand for"
        );
        assert_eq!(n(&agent["records_undecodable"]), 0);
        assert_eq!(n(&agent["lines_unwritten"]), 0);
    }
}

/// Parses "0x7f..." (or a bare hex number).
pub fn hex(text: &str) -> u64 {
    u64::from_str_radix(text.trim_start_matches("0x"), 16)
        .unwrap_or_else(|_| panic!("not hex: {text}"))
}

/// The `[start, end)` of an event's region.
pub fn region_range(event: &Value) -> (u64, u64) {
    (
        hex(event["region"]["start"].as_str().unwrap()),
        hex(event["region"]["end"].as_str().unwrap()),
    )
}

/// Symbol names of an event's stack, innermost first.
pub fn stack_symbols(event: &Value) -> Vec<String> {
    event["stack"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["symbol"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Where `workload` reported writing (its "workload: written START ..." line).
pub fn written_start(output: &std::process::Output) -> u64 {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stderr
        .lines()
        .find_map(|l| l.strip_prefix("workload: written "))
        .unwrap_or_else(|| panic!("the workload reported no region: {stderr}"));
    hex(line.split_whitespace().next().unwrap())
}

/// Runs the agent to completion (use with `-- COMMAND`).
pub fn run_agent(args: &[&str]) -> Run {
    let mut agent = Agent::start(args);
    agent.wait()
}

/// A running agent whose stdout is collected line by line.
pub struct Agent {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<thread::JoinHandle<()>>,
}

impl Agent {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(AGENT)
            .args(args)
            // Only the tests of debuginfod ask servers, and they name theirs.
            .env_remove("DEBUGINFOD_URLS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the agent starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout_reader = {
            let lines = lines.clone();
            let out = BufReader::new(child.stdout.take().unwrap());
            thread::spawn(move || {
                out.lines()
                    .map_while(Result::ok)
                    .for_each(|l| lines.lock().unwrap().push(l))
            })
        };
        let stderr_reader = {
            let stderr = stderr.clone();
            let err = BufReader::new(child.stderr.take().unwrap());
            thread::spawn(move || {
                err.lines().map_while(Result::ok).for_each(|l| {
                    let mut s = stderr.lock().unwrap();
                    s.push_str(&l);
                    s.push('\n');
                })
            })
        };
        Self {
            child,
            lines,
            stderr,
            readers: vec![stdout_reader, stderr_reader],
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until a printed event satisfies `pred`.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) {
        self.first(what, pred);
    }

    /// The first printed event that satisfies `pred`, once there is one.
    pub fn first(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + run_timeout();
        loop {
            let found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .map(|l| parse_event(l))
                .find(|e| pred(e));
            if let Some(event) = found {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; stderr:\n{}",
                self.stderr.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The events printed so far.
    pub fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| parse_event(l))
            .collect()
    }

    /// Asks the agent to stop (SIGINT) and collects the run.
    pub fn stop(mut self) -> Run {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait()
    }

    /// Waits for the agent to exit and returns only its status: for a run cut short by
    /// SIGKILL, which can stop it in the middle of a line.
    pub fn wait_status(&mut self) -> ExitStatus {
        self.child.wait().expect("waiting for the agent")
    }

    /// Waits for the agent to exit by itself and collects the run.
    pub fn wait(&mut self) -> Run {
        let deadline = Instant::now() + run_timeout();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the agent") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "the agent did not finish in {:?}; stderr:\n{}",
                    run_timeout(),
                    self.stderr.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        // A command the agent started can outlive it and hold its stdout open: the
        // readers then never see end of file, so wait for them only so long.
        while self.readers.iter().any(|r| !r.is_finished()) {
            assert!(
                Instant::now() < deadline + Duration::from_secs(10),
                "the agent exited ({status}) but its stdout or stderr stayed open; stderr:\n{}",
                self.stderr.lock().unwrap()
            );
            thread::sleep(Duration::from_millis(20));
        }
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        let events = self
            .lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| parse_event(l))
            .collect();
        Run {
            events,
            stderr: self.stderr.lock().unwrap().clone(),
            status,
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
