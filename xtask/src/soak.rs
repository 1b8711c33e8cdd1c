//! `cargo xtask soak --minutes N`: the release agent (default mode, output to a file)
//! under sustained churn: batches of short-lived processes that map, write and exit,
//! beside a process that keeps mapping, writing and unmapping. Every 10 s it samples
//! the agent's RSS, the kernel tables' fill (from `agent_stats`), events/s and losses;
//! at the end it checks the final accounting and that RSS stayed flat after warm-up,
//! and writes docs/soak.md.

use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use map_audit_common::{
    counter_catalogue::{CounterKind, CounterSet},
    counters::{AgentCounters, KernelCounters},
};
use serde_json::Value;

use crate::{bench, workspace_root};

const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// RSS may grow this much between the end of warm-up (a third of the run) and the end.
const RSS_GROWTH_ALLOWED: f64 = 1.25;

struct SoakSample {
    at_s: u64,
    rss_kib: u64,
    tables: String,
    events_per_s: f64,
    losses: u64,
}

pub fn soak(minutes: u64) -> Result<()> {
    let root = workspace_root();
    let agent = root.join("target/release/map-audit");
    let workload = bench::build_workload(&root)?;
    let scratch = root.join("target/soak");
    fs::create_dir_all(&scratch)?;
    let output = scratch.join("events.jsonl");
    let _ = fs::remove_file(&output);
    let mut child = Command::new(&agent)
        .args(["run", "--comm", bench::WORKLOAD, "--stats-interval", "10"])
        .arg("--output")
        .arg(&output)
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the agent (cargo xtask build --release first)")?;
    bench::wait_for(&output, "agent_started")?;

    let started = Instant::now();
    let deadline = started + Duration::from_secs(minutes * 60);
    let churn = |args: &[&str]| -> Result<Child> {
        Ok(Command::new(&workload)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?)
    };
    let mut writer = churn(&["loop", "64", "10000", "100"])?;
    let mut spawner = churn(&["spawn", "200"])?;
    let mut samples = Vec::new();
    let mut last_lines = 0;
    let mut next_sample = started + SAMPLE_EVERY;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("the agent exited during the soak: {status}");
        }
        if writer.try_wait()?.is_some() {
            writer = churn(&["loop", "64", "10000", "100"])?;
        }
        if spawner.try_wait()?.is_some() {
            spawner = churn(&["spawn", "200"])?;
        }
        if Instant::now() >= next_sample {
            let (sample, lines) = sample(&output, child.id(), started, last_lines)?;
            eprintln!(
                "xtask soak: {:>4} s  RSS {:.1} MiB  tables {}  {:.0} events/s  losses {}",
                sample.at_s,
                sample.rss_kib as f64 / 1024.0,
                sample.tables,
                sample.events_per_s,
                sample.losses
            );
            samples.push(sample);
            last_lines = lines;
            next_sample += SAMPLE_EVERY;
        }
        thread::sleep(Duration::from_millis(100));
    }
    for mut process in [writer, spawner] {
        let _ = process.kill();
        let _ = process.wait();
    }
    thread::sleep(Duration::from_secs(1));
    bench::stop(&mut child);
    let stopped = bench::last_event(&output)?;
    let accounting = check_accounting(&stopped);
    let rss = check_rss(&samples);
    let report = report(minutes, &samples, &stopped, &accounting, &rss);
    print!("{report}");
    fs::write(root.join("docs/soak.md"), &report).context("writing docs/soak.md failed")?;
    accounting?;
    rss?;
    Ok(())
}

/// One sample, and the output's line count for the next events/s.
fn sample(
    output: &Path,
    agent: u32,
    started: Instant,
    last_lines: usize,
) -> Result<(SoakSample, usize)> {
    let text = fs::read_to_string(output)?;
    let lines = text.lines().count();
    let stats = text
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "agent_stats");
    let rss_kib = fs::read_to_string(format!("/proc/{agent}/status"))?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let tables = stats
        .as_ref()
        .map(|s| s["counters"]["table_entries"].to_string())
        .unwrap_or_else(|| "-".into());
    let losses = stats.as_ref().map_or(0, losses);
    Ok((
        SoakSample {
            at_s: started.elapsed().as_secs(),
            rss_kib,
            tables,
            events_per_s: (lines - last_lines) as f64 / SAMPLE_EVERY.as_secs_f64(),
            losses,
        },
        lines,
    ))
}

fn count(event: &Value, side: &str, name: &str) -> u64 {
    event["counters"][side][name].as_u64().unwrap_or(0)
}

/// Every loss counter of the event, by the catalogues' kinds.
fn losses(event: &Value) -> u64 {
    fn of<S: CounterSet>(event: &Value, side: &str) -> u64 {
        S::CATALOGUE
            .iter()
            .filter(|info| info.kind == CounterKind::Loss)
            .map(|info| count(event, side, info.name))
            .sum()
    }
    of::<KernelCounters>(event, "kernel") + of::<AgentCounters>(event, "agent")
}

/// The documented equalities (docs/events.md) on the final stats.
fn check_accounting(stopped: &Value) -> Result<()> {
    if stopped["event"] != "agent_stopped" {
        bail!("the agent's last line is not agent_stopped: {stopped}");
    }
    let produced = count(stopped, "kernel", "faults_matched");
    let accounted = count(stopped, "agent", "faults_delivered")
        + count(stopped, "kernel", "faults_lost_ringbuf_full")
        + count(stopped, "kernel", "faults_rate_limited")
        + count(stopped, "agent", "faults_filtered_by_agent");
    if produced != accounted {
        bail!("write faults: {produced} produced, {accounted} delivered or counted lost");
    }
    let records =
        count(stopped, "kernel", "region_events") + count(stopped, "kernel", "process_records");
    let records_accounted = count(stopped, "agent", "region_and_process_records_delivered")
        + count(stopped, "kernel", "region_events_lost_ringbuf_full")
        + count(stopped, "kernel", "process_records_lost_ringbuf_full");
    if records != records_accounted {
        bail!(
            "region and process records: {records} produced, {records_accounted} delivered or counted lost"
        );
    }
    Ok(())
}

/// RSS at the end against RSS once warm (a third into the run).
fn check_rss(samples: &[SoakSample]) -> Result<()> {
    let (Some(warm), Some(last)) = (samples.get(samples.len() / 3), samples.last()) else {
        bail!("too few samples to judge RSS: run at least a minute");
    };
    let growth = last.rss_kib as f64 / warm.rss_kib.max(1) as f64;
    if growth > RSS_GROWTH_ALLOWED {
        bail!(
            "RSS grew from {} KiB at {} s to {} KiB at {} s (x{growth:.2})",
            warm.rss_kib,
            warm.at_s,
            last.rss_kib,
            last.at_s
        );
    }
    Ok(())
}

fn report(
    minutes: u64,
    samples: &[SoakSample],
    stopped: &Value,
    accounting: &Result<()>,
    rss: &Result<()>,
) -> String {
    let mut out = format!(
        "# Soak\n\nCommand: `cargo xtask soak --minutes {minutes}` (as root). The release agent in its default mode \
         (`--comm {}`, output to a file) while the workload keeps running `spawn 200` (200 short-lived children \
         that map, write and exit) and `loop 64 10000 100` (map 64 pages, write, unmap, pause 100 us). \
         Sampled every {} s.\n\n| s | agent RSS MiB | kernel tables | events/s | losses so far |\n|---|---|---|---|---|\n",
        bench::WORKLOAD,
        SAMPLE_EVERY.as_secs()
    );
    for s in samples {
        out.push_str(&format!(
            "| {} | {:.1} | {} | {:.0} | {} |\n",
            s.at_s,
            s.rss_kib as f64 / 1024.0,
            s.tables.replace('|', "/"),
            s.events_per_s,
            s.losses
        ));
    }
    let verdict = |r: &Result<()>| match r {
        Ok(()) => "ok".to_string(),
        Err(err) => format!("FAILED: {err}"),
    };
    out.push_str(&format!(
        "\nFinal: faults matched {}, delivered {}, losses {}, tables at exit {}.\n\
         Accounting (produced = delivered + counted losses): {}.\n\
         RSS flat after warm-up (end <= x{RSS_GROWTH_ALLOWED} of the sample a third in): {}.\n",
        count(stopped, "kernel", "faults_matched"),
        count(stopped, "agent", "faults_delivered"),
        losses(stopped),
        stopped["counters"]["table_entries"],
        verdict(accounting),
        verdict(rss)
    ));
    out
}
