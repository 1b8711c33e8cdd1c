//! `cargo xtask vm-test`: the fault-hook, audit and re-arm integration tests on other
//! kernels. Builds the agent, the tests and the C workloads statically, packs them into
//! an initramfs and boots each kernel (`vm_guest`). Prints a table of kernel x fault
//! hook.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    run,
    vm_guest::{self, KERNELS, STATIC_TARGET},
    workspace_root,
};

/// Fault hooks in the table, with the test that proves each. The raw tracepoint is
/// the reference of every fault-hook test and the default hook of the audit suite.
const HOOK_TESTS: [(&str, &str); 6] = [
    ("raw-tracepoint", "audit"),
    (
        "tp-btf",
        "fault_hooks::tp_btf_gives_the_raw_tracepoints_events",
    ),
    (
        "tracepoint",
        "fault_hooks::tracepoint_gives_the_raw_tracepoints_events",
    ),
    (
        "perf-event",
        "fault_hooks::perf_event_gives_the_raw_tracepoints_events",
    ),
    (
        "fentry",
        "fault_hooks::fentry_gives_the_raw_tracepoints_events_or_one_sentence_where_ftrace_cannot",
    ),
    (
        "kprobe",
        "fault_hooks::kprobe_gives_the_raw_tracepoints_events_or_one_sentence_without_kprobes",
    ),
];

/// How many times a guest whose kernel locked up is booted again.
const MAX_LOCKUP_RETRIES: u32 = 1;

/// How long one test may run in a guest before it is killed (the host takes seconds;
/// emulation is several times slower, and its speed varies from machine to machine).
const TEST_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// How long one agent run may take inside a test in a guest (90 s on the host).
const AGENT_RUN_TIMEOUT: Duration = Duration::from_secs(3 * 60);

pub fn vm_test(only: &[String]) -> Result<()> {
    vm_guest::ensure_host_tools()?;
    let vm_dir = workspace_root().join("target/vm");
    let binaries = build_static(&vm_dir)?;
    let initramfs = pack_initramfs(&vm_dir, &binaries)?;
    let mut rows = Vec::new();
    let mut failed = false;
    for source in KERNELS
        .iter()
        .filter(|k| only.is_empty() || only.iter().any(|o| o == k.label))
    {
        let vmlinuz = vm_guest::fetch_kernel(&vm_dir.join("kernels"), source)?;
        let log = vm_dir.join(format!("guest-{}.log", source.label));
        eprintln!(
            "xtask vm-test: booting {} ({}) under TCG; serial log in {}",
            source.label,
            vmlinuz.display(),
            log.display()
        );
        let started = Instant::now();
        let mut lockups = 0;
        let guest = loop {
            let parameters = format!("map_audit_suites={}", source.suites.join(","));
            let booted = vm_guest::boot(&vmlinuz, &initramfs, &log, 2048, &parameters);
            let serial = fs::read_to_string(&log)?;
            let guest = GuestReport::parse(&serial);
            if let Err(error) = &booted {
                eprintln!("xtask vm-test: {} guest: {error:#}", source.label);
            }
            if booted.is_ok() && guest.all_passed(source.suites) {
                break guest;
            }
            print_tail(source.label, &serial);
            // An emulated kernel that locked up (it panics, see `boot`) is booted once
            // more, and the table says so; a test that failed is not retried.
            if guest.kernel_locked_up && lockups < MAX_LOCKUP_RETRIES {
                lockups += 1;
                let kept = vm_dir.join(format!("guest-{}-lockup-{lockups}.log", source.label));
                fs::rename(&log, &kept)?;
                eprintln!(
                    "xtask vm-test: the {} guest kernel locked up (log kept in {}); booting it again",
                    source.label,
                    kept.display()
                );
                continue;
            }
            failed = true;
            break guest;
        };
        rows.push(guest.row(source.label, started.elapsed(), lockups));
    }
    if rows.is_empty() {
        bail!("no kernel matches {only:?}; known: 5.10, 6.1, 6.12");
    }
    print_table(&rows);
    if failed {
        bail!("some tests failed in a guest; see target/vm/guest-*.log");
    }
    Ok(())
}

/// Paths of what goes into the guest.
struct StaticBinaries {
    agent: PathBuf,
    tests: Vec<(String, PathBuf)>,
    /// (name in the guest's /bin, path)
    workloads: Vec<(&'static str, PathBuf)>,
}

/// The C workloads, built statically the way their suites build them on the host:
/// (name, source in tests/workloads, gcc flags).
const WORKLOADS: [(&str, &str, &[&str]); 2] = [
    (
        "workload",
        "workload.c",
        &["-O0", "-fno-omit-frame-pointer"],
    ),
    // Not "rearm": the test binary's name, and `--comm` would match the tests too.
    ("rearm-workload", "rearm.c", &["-O2"]),
];

/// Builds the agent and the test suites statically (no libraries in the guest), and
/// the workloads.
fn build_static(vm_dir: &Path) -> Result<StaticBinaries> {
    crate::build_ebpf::build()?;
    let mut cargo = vm_guest::static_cargo();
    cargo
        .args(["test", "--no-run", "--package", "map-audit", "--target"])
        .arg(STATIC_TARGET)
        .arg("--target-dir")
        .arg(vm_dir)
        .args(["--message-format", "json"]);
    let suites = vm_guest::all_suites();
    for suite in &suites {
        cargo.args(["--test", suite]);
    }
    let output = cargo
        .stderr(Stdio::inherit())
        .output()
        .context("cannot start cargo")?;
    if !output.status.success() {
        bail!("the static test build failed");
    }
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let name = message["target"]["name"].as_str().unwrap_or_default();
        if let (Some(exe), true) = (
            message["executable"].as_str(),
            suites.contains(&name) && message["profile"]["test"] == true,
        ) {
            tests.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    if tests.len() != suites.len() {
        bail!("expected test binaries for {suites:?}, cargo reported {tests:?}");
    }
    let mut workloads = Vec::new();
    for (name, source, flags) in WORKLOADS {
        let out = vm_dir.join(name);
        let source = workspace_root()
            .join("map-audit-userspace/tests/workloads")
            .join(source);
        run(Command::new("gcc")
            .args(["-static", "-g"])
            .args(flags)
            .arg("-o")
            .arg(&out)
            .arg(&source))?;
        workloads.push((name, out));
    }
    Ok(StaticBinaries {
        // Where the tests look for it (CARGO_BIN_EXE_map-audit).
        agent: vm_guest::static_agent_path(vm_dir),
        tests,
        workloads,
    })
}

/// The guest's /init after the mounts: runs each test of each of its kernel's suites
/// (`map_audit_suites=` on its command line) in a process of its own under a kill
/// timeout (a hung test fails alone, by name, instead of eating the guest's time),
/// powers off. Every line meant for the host starts with "@@".
/// /tmp stays the initramfs's own (writable): a tmpfs over it would hide a checkout that
/// lives under /tmp.
const RUN_TESTS: &str = r#"export MAP_AUDIT_TEST_WORKLOAD=/bin/workload
export MAP_AUDIT_TEST_REARM=/bin/rearm-workload
export MAP_AUDIT_TEST_TIMEOUT_SECS=@AGENT_RUN_TIMEOUT@
echo "@@ kernel $(uname -r)"
[ -e /sys/bus/event_source/devices/kprobe ] && echo "@@ kprobes yes" || echo "@@ kprobes no"
grep -qx handle_mm_fault /sys/kernel/tracing/available_filter_functions && echo "@@ fentry yes" || echo "@@ fentry no"
@AGENT@ check > /tmp/check 2>&1
sed 's/^/@@ check /' /tmp/check
suites=$(sed -n 's/.*map_audit_suites=\([^ ]*\).*/\1/p' /proc/cmdline | tr , ' ')
for name in $suites; do
    suite=/tests/$name
    status=0
    for test in $("$suite" --list 2>/dev/null | sed -n 's/: test$//p'); do
        started=$(date +%s)
        timeout -s KILL @TEST_TIMEOUT@ "$suite" --exact "$test" --include-ignored --test-threads=1 > /tmp/out 2>&1
        rc=$?
        # What a killed or failed test started must not slow the next one down.
        kill -9 -1 2>/dev/null
        sed "s/^/@@ $name /" /tmp/out
        [ $rc -eq 137 ] && echo "@@ $name test $test ... KILLED after @TEST_TIMEOUT@ s"
        echo "@@ $name took $test $(( $(date +%s) - started )) s"
        [ $rc -eq 0 ] || status=$rc
    done
    echo "@@ $name exit $status"
done
echo "@@ done"
poweroff -f
"#;

fn pack_initramfs(vm_dir: &Path, binaries: &StaticBinaries) -> Result<PathBuf> {
    let root = vm_dir.join("initramfs");
    vm_guest::new_root(&root)?;
    for (name, path) in &binaries.workloads {
        fs::copy(path, root.join("bin").join(name))?;
    }
    // `/bin/true` for the tests; busybox --install adds the rest at boot.
    std::os::unix::fs::symlink("busybox", root.join("bin/true"))?;
    vm_guest::copy_in(&root, &binaries.agent)?;
    for (name, path) in &binaries.tests {
        fs::copy(path, root.join("tests").join(name))?;
    }
    let init = format!("{}{RUN_TESTS}", vm_guest::INIT_MOUNTS)
        .replace(
            "@AGENT_RUN_TIMEOUT@",
            &AGENT_RUN_TIMEOUT.as_secs().to_string(),
        )
        .replace("@TEST_TIMEOUT@", &TEST_TIMEOUT.as_secs().to_string())
        .replace("@AGENT@", &binaries.agent.display().to_string());
    let archive = vm_dir.join("initramfs.cpio");
    vm_guest::pack(&root, &init, &archive)?;
    Ok(archive)
}

/// What a guest printed: its kernel, the default hook `map-audit check` chose, and
/// each test's result.
struct GuestReport {
    kernel: String,
    default_hook: String,
    has_kprobes: bool,
    has_fentry: bool,
    /// ("suite::test", passed)
    tests: Vec<(String, bool)>,
    /// (suite, exit status)
    suites: Vec<(String, String)>,
    done: bool,
    /// The guest kernel reported a soft lockup or panicked.
    kernel_locked_up: bool,
}

impl GuestReport {
    fn parse(log: &str) -> Self {
        let mut report = Self {
            kernel: "?".into(),
            default_hook: "?".into(),
            has_kprobes: false,
            has_fentry: false,
            tests: Vec::new(),
            suites: Vec::new(),
            done: false,
            kernel_locked_up: log.contains("BUG: soft lockup") || log.contains("Kernel panic"),
        };
        // The console's escape codes can precede a marker on its line.
        let marked = log
            .lines()
            .filter_map(|l| l.find("@@ ").map(|at| l[at + 3..].trim_end()));
        for line in marked {
            if let Some(kernel) = line.strip_prefix("kernel ") {
                report.kernel = kernel.to_string();
            } else if line == "kprobes yes" {
                report.has_kprobes = true;
            } else if line == "fentry yes" {
                report.has_fentry = true;
            } else if let Some(hook) = line
                .strip_prefix("check ")
                .and_then(|l| l.trim_start().strip_prefix("write faults:"))
            {
                report.default_hook = hook.trim().to_string();
            } else if line == "done" {
                report.done = true;
            } else if let Some((suite, rest)) = line.split_once(' ') {
                if let Some(status) = rest.strip_prefix("exit ") {
                    report.suites.push((suite.into(), status.into()));
                } else if let Some(test) = rest.strip_prefix("test ")
                    && let Some((name, result)) = test.split_once(" ... ")
                {
                    report
                        .tests
                        .push((format!("{suite}::{name}"), result.starts_with("ok")));
                }
            }
        }
        report
    }

    fn all_passed(&self, suites: &[&str]) -> bool {
        self.done
            && self.suites.len() == suites.len()
            && self.suites.iter().all(|(_, status)| status == "0")
    }

    fn hook_status(&self, hook: &str, test: &str) -> String {
        if (hook == "kprobe" && !self.has_kprobes) || (hook == "fentry" && !self.has_fentry) {
            return "unavailable".into();
        }
        let results: Vec<bool> = self
            .tests
            .iter()
            .filter(|(name, _)| name == test || name.starts_with(&format!("{test}::")))
            .map(|(_, passed)| *passed)
            .collect();
        match (results.is_empty(), results.iter().all(|&p| p)) {
            (true, _) => "not run".into(),
            (false, true) => "pass".into(),
            (false, false) => "FAIL".into(),
        }
    }

    fn row(&self, label: &str, took: Duration, lockups: u32) -> Vec<String> {
        let mut row = vec![format!("{label} ({})", self.kernel)];
        if lockups > 0 {
            row[0].push_str(&format!(", booted again after {lockups} kernel lockup(s)"));
        }
        row.extend(
            HOOK_TESTS
                .iter()
                .map(|(hook, test)| self.hook_status(hook, test)),
        );
        let passed = self.tests.iter().filter(|(_, p)| *p).count();
        row.push(format!("{passed}/{}", self.tests.len()));
        row.push(self.default_hook.clone());
        row.push(format!("{:.0} s", took.as_secs_f64()));
        row
    }
}

/// The end of a failed guest's serial log, so a CI log shows why without the file.
fn print_tail(label: &str, serial: &str) {
    const LINES: usize = 80;
    let lines: Vec<&str> = serial.lines().collect();
    eprintln!("xtask vm-test: last {LINES} lines of the {label} guest's serial log:");
    for line in &lines[lines.len().saturating_sub(LINES)..] {
        eprintln!("  {line}");
    }
}

fn print_table(rows: &[Vec<String>]) {
    let mut header = vec!["kernel".to_string()];
    header.extend(HOOK_TESTS.iter().map(|(hook, _)| hook.to_string()));
    header.extend(["tests passed", "default fault hook", "time"].map(String::from));
    println!("| {} |", header.join(" | "));
    println!("|{}", "---|".repeat(header.len()));
    for row in rows {
        println!("| {} |", row.join(" | "));
    }
}
