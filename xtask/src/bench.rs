//! `cargo xtask bench`: the cost of map-audit on the page-fault path, against no tracing
//! and against bpftrace and perf when they are installed. Baseline and traced runs are
//! interleaved in every round (baseline first and last), and medians reported: these
//! machines are noisy. Writes docs/benchmarks.md.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{run, toolchain, workspace_root};

/// 256 MiB of 4 KiB pages, written four times: 262,144 write faults per run.
const PAGES: u64 = 65_536;
const CYCLES: u64 = 4;
const FAULTS: u64 = PAGES * CYCLES;
/// Program name of the workload (its comm, for --comm and the peers' filters).
pub const WORKLOAD: &str = "mapaudit-bench";
/// The same workload built `-O2` without frame pointers, as distributions build.
pub const WORKLOAD_NO_FP: &str = "mapaudit-nofp";

/// The two builds of the workload.
pub struct Workloads {
    pub frame_pointers: PathBuf,
    pub no_frame_pointers: PathBuf,
}

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Baseline,
    /// The workload with 10,000 extra one-page regions, untraced.
    BaselineManyRegions,
    Default,
    EveryEvent,
    OutOfScope,
    ManyRegions,
    BpftraceStacks,
    PerfRecord,
    BaselineNoFp,
    DefaultNoFp,
    BpftraceStacksNoFp,
    PerfDwarfNoFp,
    /// `Default` and `DefaultNoFp` with the object for kernels before 5.17 (forced).
    DefaultOlderObject,
    DefaultNoFpOlderObject,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Baseline => "baseline (no tracing)",
            Scenario::BaselineManyRegions => "baseline, 10,000 extra regions",
            Scenario::Default => "map-audit, default (aggregated)",
            Scenario::EveryEvent => "map-audit --every-event, to a file",
            Scenario::OutOfScope => "map-audit auditing another process",
            Scenario::ManyRegions => "map-audit, default, 10,000 extra regions",
            Scenario::BpftraceStacks => "bpftrace, ustack of write faults",
            Scenario::PerfRecord => "perf record -e page-faults -c 1 -g",
            Scenario::BaselineNoFp => "baseline, -O2 without frame pointers",
            Scenario::DefaultNoFp => "map-audit, default, -O2 without frame pointers",
            Scenario::BpftraceStacksNoFp => {
                "bpftrace, ustack of write faults, -O2 without frame pointers"
            }
            Scenario::PerfDwarfNoFp => {
                "perf record --call-graph dwarf (page_fault_user), -O2 without frame pointers"
            }
            Scenario::DefaultOlderObject => "map-audit, default, object for kernels before 5.17",
            Scenario::DefaultNoFpOlderObject => {
                "map-audit, default, object for kernels before 5.17, -O2 without frame pointers"
            }
        }
    }

    /// Whether it runs the build without frame pointers.
    fn no_frame_pointers(self) -> bool {
        matches!(
            self,
            Scenario::BaselineNoFp
                | Scenario::DefaultNoFp
                | Scenario::BpftraceStacksNoFp
                | Scenario::PerfDwarfNoFp
                | Scenario::DefaultNoFpOlderObject
        )
    }

    /// The workload's comm.
    fn comm(self) -> &'static str {
        if self.no_frame_pointers() {
            WORKLOAD_NO_FP
        } else {
            WORKLOAD
        }
    }

    fn extra_regions(self) -> u64 {
        if matches!(self, Scenario::ManyRegions | Scenario::BaselineManyRegions) {
            10_000
        } else {
            0
        }
    }

    /// The untraced run to compare with.
    fn baseline(self) -> Scenario {
        if self.extra_regions() > 0 {
            Scenario::BaselineManyRegions
        } else if self.no_frame_pointers() {
            Scenario::BaselineNoFp
        } else {
            Scenario::Baseline
        }
    }
}

/// One measured run.
#[derive(Default, Clone)]
struct Sample {
    /// The workload's own timing of its fault loop.
    elapsed_ns: f64,
    delivered: Option<u64>,
    lost: Option<u64>,
    agent_cpu_s: Option<f64>,
    agent_rss_kib: Option<u64>,
    /// Kernel-side ns per run of the fault program (BPF run-time statistics).
    bpf_ns_per_run: Option<f64>,
}

pub fn bench(rounds: usize) -> Result<()> {
    if !crate::nix_is_root() {
        bail!("the benchmark loads eBPF programs and needs root; run it with sudo");
    }
    let root = workspace_root();
    let agent = root.join("target/release/map-audit");
    let workloads = Workloads {
        frame_pointers: build_workload(&root)?,
        no_frame_pointers: build_workload_without_frame_pointers(&root)?,
    };
    let scratch = root.join("target/bench");
    fs::create_dir_all(&scratch)?;
    let stats_before = fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    // Off while timing: the statistics read the clock twice per program run (~50 ns
    // per fault here), which users do not pay. On only for the kernel ns/run runs.
    let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");

    let mut scenarios = vec![
        Scenario::Default,
        Scenario::EveryEvent,
        Scenario::OutOfScope,
        Scenario::BaselineManyRegions,
        Scenario::ManyRegions,
        Scenario::BaselineNoFp,
        Scenario::DefaultNoFp,
        Scenario::DefaultOlderObject,
        Scenario::DefaultNoFpOlderObject,
    ];
    // The peers and bpftool run in the same rounds: installed here, never skipped
    // for being missing.
    for (program, package) in [
        ("bpftool", "bpftool"),
        ("bpftrace", "bpftrace"),
        ("perf", "linux-perf"),
    ] {
        if !which(program) {
            toolchain::apt_install(&format!("{program} (the bench)"), &[package])?;
        }
    }
    let mut peers_note = Vec::new();
    scenarios.push(Scenario::BpftraceStacks);
    scenarios.push(Scenario::BpftraceStacksNoFp);
    if which("perf")
        && Command::new("perf")
            .args(["stat", "-e", "page-faults", "true"])
            .output()
            .is_ok_and(|o| o.status.success())
    {
        scenarios.push(Scenario::PerfRecord);
        scenarios.push(Scenario::PerfDwarfNoFp);
    } else {
        peers_note.push("perf: not installed or not usable, skipped");
    }

    let mut samples: Vec<(Scenario, Sample)> = Vec::new();
    for round in 1..=rounds {
        eprintln!("xtask bench: round {round}/{rounds}");
        samples.push((
            Scenario::Baseline,
            measure(Scenario::Baseline, &agent, &workloads, &scratch)?,
        ));
        for &scenario in &scenarios {
            let sample = measure(scenario, &agent, &workloads, &scratch)?;
            eprintln!(
                "xtask bench:   {}: {:.1} ms",
                scenario.name(),
                sample.elapsed_ns / 1e6
            );
            samples.push((scenario, sample));
        }
        samples.push((
            Scenario::Baseline,
            measure(Scenario::Baseline, &agent, &workloads, &scratch)?,
        ));
    }
    let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", stats_before.trim());

    let report = report(rounds, &samples, &peers_note);
    println!("{report}");
    fs::write(root.join("docs/benchmarks.md"), report)
        .context("writing docs/benchmarks.md failed")?;
    Ok(())
}

pub fn build_workload(root: &Path) -> Result<PathBuf> {
    let out = root.join("target").join(WORKLOAD);
    run(Command::new("gcc")
        .args([
            "-O2",
            "-g",
            "-fno-omit-frame-pointer",
            "-mno-omit-leaf-frame-pointer",
            "-o",
        ])
        .arg(&out)
        .arg(root.join("map-audit-userspace/tests/workloads/workload.c")))?;
    Ok(out)
}

/// The workload as distributions build C: `-O2`, no frame pointers.
pub fn build_workload_without_frame_pointers(root: &Path) -> Result<PathBuf> {
    let out = root.join("target").join(WORKLOAD_NO_FP);
    run(Command::new("gcc")
        .args(["-O2", "-g", "-o"])
        .arg(&out)
        .arg(root.join("map-audit-userspace/tests/workloads/workload.c")))?;
    Ok(out)
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// Runs the workload once and returns its own timing of the fault loop.
fn run_workload(workload: &Path, extra_regions: u64, wrapper: &[String]) -> Result<f64> {
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(workload);
            c
        }
        None => Command::new(workload),
    };
    let out = command
        .args([
            "bench",
            &PAGES.to_string(),
            &CYCLES.to_string(),
            &extra_regions.to_string(),
        ])
        .stdout(Stdio::null())
        .output()
        .context("running the workload failed")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("workload: elapsed_ns "))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("the workload did not report its time: {stderr}"))
}

fn measure(
    scenario: Scenario,
    agent: &Path,
    workloads: &Workloads,
    scratch: &Path,
) -> Result<Sample> {
    let extra = scenario.extra_regions();
    let workload = if scenario.no_frame_pointers() {
        &workloads.no_frame_pointers
    } else {
        &workloads.frame_pointers
    };
    let comm = scenario.comm();
    match scenario {
        Scenario::Baseline | Scenario::BaselineManyRegions | Scenario::BaselineNoFp => Ok(Sample {
            elapsed_ns: run_workload(workload, extra, &[])?,
            ..Default::default()
        }),
        Scenario::PerfRecord | Scenario::PerfDwarfNoFp => {
            let (options, data): (&[&str], _) = if scenario == Scenario::PerfRecord {
                (&["-e", "page-faults", "-c", "1", "-g"], "perf.data")
            } else {
                (
                    &["-e", "exceptions:page_fault_user", "--call-graph", "dwarf"],
                    "perf-dwarf.data",
                )
            };
            let data = scratch.join(data);
            let elapsed = run_workload(workload, extra, &perf_record(options, &data));
            // perf's data (2 GiB with DWARF stacks) written back during the next
            // scenario's run slowed it by up to 40%: gone, and synced, before it.
            let _ = fs::remove_file(&data);
            let _ = Command::new("sync").status();
            Ok(Sample {
                elapsed_ns: elapsed?,
                ..Default::default()
            })
        }
        Scenario::BpftraceStacks | Scenario::BpftraceStacksNoFp => {
            let script = format!(
                "tracepoint:exceptions:page_fault_user /comm == \"{comm}\" && (args->error_code & 2)/ {{ @[ustack] = count(); }}"
            );
            let mut tracer = Command::new("bpftrace")
                .args(["-e", &script])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            thread::sleep(Duration::from_secs(3)); // bpftrace compiles and attaches
            let elapsed = run_workload(workload, extra, &[]);
            stop(&mut tracer);
            Ok(Sample {
                elapsed_ns: elapsed?,
                ..Default::default()
            })
        }
        _ => {
            let timed = measure_agent(scenario, agent, workload, scratch, false)?;
            let with_stats = measure_agent(scenario, agent, workload, scratch, true)?;
            Ok(Sample {
                bpf_ns_per_run: with_stats.bpf_ns_per_run,
                ..timed
            })
        }
    }
}

/// `perf record -q ARGS -o DATA --`, to put in front of the workload.
fn perf_record(args: &[&str], data: &Path) -> Vec<String> {
    ["perf", "record", "-q"]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .chain(["-o".into(), data.display().to_string(), "--".into()])
        .collect()
}

/// One run of the workload under the agent: timed (`stats` false), or with BPF
/// run-time statistics on for the kernel ns/run.
fn measure_agent(
    scenario: Scenario,
    agent: &Path,
    workload: &Path,
    scratch: &Path,
    stats: bool,
) -> Result<Sample> {
    let output = scratch.join("events.jsonl");
    let _ = fs::remove_file(&output);
    let scope = if scenario == Scenario::OutOfScope {
        "nobody-matches"
    } else {
        scenario.comm()
    };
    let mut args = vec![
        "run",
        "--comm",
        scope,
        "--stats-interval",
        "0",
        "--ringbuf-size",
        "16777216",
    ];
    if scenario == Scenario::EveryEvent {
        args.push("--every-event");
    }
    if matches!(
        scenario,
        Scenario::DefaultOlderObject | Scenario::DefaultNoFpOlderObject
    ) {
        args.extend(["--ebpf-object", "linux5-10"]);
    }
    let mut child = Command::new(agent)
        .args(&args)
        .arg("--output")
        .arg(&output)
        .stderr(Stdio::null())
        .spawn()?;
    wait_for(&output, "agent_started")?;
    let stats_switch = |on: &str| {
        if stats {
            let _ = fs::write("/proc/sys/kernel/bpf_stats_enabled", on);
        }
    };
    stats_switch("1");
    let before = fault_program_stats();
    let elapsed = run_workload(workload, scenario.extra_regions(), &[]);
    let after = fault_program_stats();
    stats_switch("0");
    thread::sleep(Duration::from_millis(300)); // let the agent drain
    let (cpu, rss) = agent_usage(child.id());
    stop(&mut child);
    let stopped = last_event(&output)?;
    let kernel = &stopped["counters"]["kernel"];
    let lost = kernel["faults_lost_ringbuf_full"].as_u64().unwrap_or(0)
        + kernel["faults_rate_limited"].as_u64().unwrap_or(0);
    let bpf_ns_per_run = match (before, after) {
        (Some((t0, n0)), Some((t1, n1))) if n1 > n0 => Some((t1 - t0) as f64 / (n1 - n0) as f64),
        _ => None,
    };
    Ok(Sample {
        elapsed_ns: elapsed?,
        delivered: stopped["counters"]["agent"]["faults_delivered"].as_u64(),
        lost: Some(lost),
        agent_cpu_s: cpu,
        agent_rss_kib: rss,
        bpf_ns_per_run,
    })
}

/// SIGINT, repeated every 5 s (bpftrace once slept through one sent while it was
/// still starting, and the bench waited forever), then SIGKILL after 60 s.
pub fn stop(child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        unsafe_kill(child.id());
        for _ in 0..50 {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn unsafe_kill(pid: u32) {
    let _ = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}

pub fn wait_for(output: &Path, event: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if fs::read_to_string(output).is_ok_and(|s| s.contains(event)) {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(20));
    }
    bail!("the agent did not start within 30 s")
}

pub fn last_event(output: &Path) -> Result<Value> {
    let text = fs::read_to_string(output)?;
    let last = text.lines().last().context("the agent wrote nothing")?;
    Ok(serde_json::from_str(last)?)
}

/// (CPU seconds, peak RSS in KiB) of a running process.
fn agent_usage(pid: u32) -> (Option<f64>, Option<u64>) {
    let ticks = 100.0; // USER_HZ on Linux
    let cpu = fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        });
    let rss = fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        });
    (cpu, rss)
}

/// (run_time_ns, run_cnt) summed over the loaded fault programs, from bpftool.
fn fault_program_stats() -> Option<(u64, u64)> {
    let out = Command::new("bpftool")
        .args(["prog", "show", "-j"])
        .output()
        .ok()?;
    let programs: Value = serde_json::from_slice(&out.stdout).ok()?;
    let mut total = (0, 0);
    for p in programs.as_array()? {
        if p["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("page_fault_"))
        {
            total.0 += p["run_time_ns"].as_u64().unwrap_or(0);
            total.1 += p["run_cnt"].as_u64().unwrap_or(0);
        }
    }
    Some(total)
}

/// Runs a workload that times its own loop and prints it on stderr as
/// `{prefix}elapsed_ns N`; returns N.
pub fn self_timed(command: &mut Command, prefix: &str) -> Result<f64> {
    let out = command
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("running {:?} failed", command.get_program()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let key = format!("{prefix}elapsed_ns ");
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("the workload did not report its time: {stderr}"))
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn report(rounds: usize, samples: &[(Scenario, Sample)], peers_note: &[&str]) -> String {
    let median_of = |scenario: Scenario, f: &dyn Fn(&Sample) -> Option<f64>| {
        let values: Vec<f64> = samples
            .iter()
            .filter(|(s, _)| *s == scenario)
            .filter_map(|(_, x)| f(x))
            .collect();
        (!values.is_empty()).then(|| median(values))
    };
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Command: `cargo xtask bench --rounds {rounds}` (as root). Machine: {} vCPUs, {cpu}, Linux {}.\n",
        thread::available_parallelism().map_or(0, |n| n.get()),
        kernel.trim()
    );
    let _ = writeln!(
        out,
        "Workload: `workload bench {PAGES} {CYCLES} N` (gcc -O2 with frame pointers): map 256 MiB \
         anonymous RW memory, write one byte per 4 KiB page, unmap, four times: {FAULTS} write faults; \
         it times its own fault loop. Each round runs the baseline first and last; figures are \
         medians over {rounds} rounds. Extra ns per fault = (median - baseline median) / {FAULTS}. \
         Kernel ns/run: BPF run-time statistics of the fault programs (kernel.bpf_stats_enabled), \
         from a second run of each agent scenario; the timed runs have them off (they read the \
         clock twice per program run, a cost users do not pay).\n"
    );
    let _ = writeln!(
        out,
        "| scenario | median ms | x baseline | extra ns/fault | delivered | lost | agent CPU s | agent peak RSS MiB | kernel ns/run |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let mut order: Vec<Scenario> = Vec::new();
    for (s, _) in samples {
        if !order.contains(s) {
            order.push(*s);
        }
    }
    for scenario in order {
        let Some(ms) = median_of(scenario, &|x| Some(x.elapsed_ns)) else {
            continue;
        };
        let base = median_of(scenario.baseline(), &|x| Some(x.elapsed_ns)).unwrap_or(ms);
        let opt =
            |v: Option<f64>, digits: usize| v.map_or("-".to_string(), |v| format!("{v:.digits$}"));
        let _ = writeln!(
            out,
            "| {} | {:.1} | {:.2} | {:.0} | {} | {} | {} | {} | {} |",
            scenario.name(),
            ms / 1e6,
            ms / base,
            (ms - base) / FAULTS as f64,
            opt(median_of(scenario, &|x| x.delivered.map(|v| v as f64)), 0),
            opt(median_of(scenario, &|x| x.lost.map(|v| v as f64)), 0),
            opt(median_of(scenario, &|x| x.agent_cpu_s), 2),
            opt(
                median_of(scenario, &|x| x.agent_rss_kib.map(|v| v as f64 / 1024.0)),
                1
            ),
            opt(median_of(scenario, &|x| x.bpf_ns_per_run), 0),
        );
    }
    // The spread of the untraced runs: the noise any difference above sits in.
    let baseline: Vec<f64> = samples
        .iter()
        .filter(|(s, _)| *s == Scenario::Baseline)
        .map(|(_, x)| x.elapsed_ns)
        .collect();
    if let (Some(low), Some(high)) = (
        baseline.iter().copied().reduce(f64::min),
        baseline.iter().copied().reduce(f64::max),
    ) {
        let _ = writeln!(
            out,
            "\n- Spread: the {} baseline runs took {:.1} to {:.1} ms, {:.0} ns per fault apart; \
             kernel ns/run, measured in the kernel, is the steadier figure.",
            baseline.len(),
            low / 1e6,
            high / 1e6,
            (high - low) / FAULTS as f64
        );
    }
    for note in peers_note {
        let _ = writeln!(out, "\n- {note}");
    }
    out
}
