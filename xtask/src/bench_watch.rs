//! `cargo xtask bench --watch`: what a hardware watchpoint costs per write. Two threads
//! write a global (and its neighbour) N times each (`tests/workloads/watch.c`, built
//! `-O2` without frame pointers, position-dependent so perf can be given the address)
//! and time their own phase; rounds interleave the bare program, `map-audit watch
//! --symbol counter`, and `perf stat -e mem:ADDR:w:u` (the trap alone, counted
//! in-kernel: the floor any watchpoint tool pays); medians go to
//! docs/benchmarks-watch.md.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{
    bench::{median, self_timed},
    run, workspace_root,
};

/// Writes to the watched global per thread (two threads).
const WRITES: u64 = 100_000;

pub fn bench(rounds: usize) -> Result<()> {
    if !crate::nix_is_root() {
        bail!("the benchmark loads eBPF programs and needs root; run it with sudo");
    }
    let root = workspace_root();
    let agent = root.join("target/release/map-audit");
    let program = build_program(&root)?;
    let address = symbol_address(&program, "counter")?;
    let has_perf = Command::new("perf").arg("--version").output().is_ok();
    let (mut bare, mut watched, mut perf) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("xtask bench --watch: round {round}/{rounds}");
        bare.push(timed(Command::new(&program))?);
        let mut under_agent = Command::new(&agent);
        under_agent
            .args(["watch", "--symbol", "counter", "--output"])
            .arg(root.join("target/bench/watch.jsonl"))
            .arg("--")
            .arg(&program);
        watched.push(timed(under_agent)?);
        if has_perf {
            let mut under_perf = Command::new("perf");
            under_perf
                .args(["stat", "-x,", "-e"])
                .arg(format!("mem:{address:#x}:w:u"))
                .arg("--")
                .arg(&program);
            perf.push(timed(under_perf)?);
        }
        bare.push(timed(Command::new(&program))?);
    }
    let hits = (2 * WRITES) as f64;
    let bare = median(bare);
    let row = |name: &str, elapsed: f64| {
        format!(
            "| {name} | {:.0} | {:.0} | x{:.1} |\n",
            elapsed / 1e3,
            (elapsed - bare) / hits,
            elapsed / bare
        )
    };
    let mut table = row("bare", bare);
    let watched = median(watched);
    table.push_str(&row(
        "map-audit watch (stack walk, record, aggregation)",
        watched,
    ));
    let perf_note = if perf.is_empty() {
        "perf: not installed (apt-get install linux-perf), skipped.\n".to_string()
    } else {
        table.push_str(&row("perf stat -e mem:ADDR:w:u (count only)", median(perf)));
        String::new()
    };
    let report = format!(
        "# Watch benchmark\n\n\
         Command: `cargo xtask bench --watch --rounds {rounds}` (as root). Two threads each \
         write a watched global {WRITES} times (and an unwatched neighbour in the same loop; \
         `tests/workloads/watch.c`, gcc -O2, no frame pointers) and time their own phase; \
         each round runs the bare program, the program under `map-audit watch --symbol \
         counter`, under `perf stat` with the same watchpoint, and the bare program again; \
         medians over the rounds.\n\n\
         | | threads' phase, us | ns added per watched write | ratio |\n|---|---|---|---|\n\
         {table}\n{perf_note}\
         Every watched write traps (a debug exception) whoever watches it: perf's row is that \
         floor. map-audit adds the BPF program (a CFI stack walk, the value read, a ring \
         buffer record) and the agent's aggregation. Use `watch` on one hot variable of one \
         process while finding its writers, not as an always-on audit: for that, `run`'s \
         page faults cost once per page, not once per write.\n"
    );
    println!("{report}");
    fs::write(root.join("docs/benchmarks-watch.md"), report)
        .context("writing docs/benchmarks-watch.md failed")
}

fn build_program(root: &Path) -> Result<PathBuf> {
    fs::create_dir_all(root.join("target/bench"))?;
    let out = root.join("target/bench/watch-no-pie");
    run(Command::new("gcc")
        .args(["-O2", "-g", "-pthread", "-no-pie", "-o"])
        .arg(&out)
        .arg(root.join("map-audit-userspace/tests/workloads/watch.c")))?;
    Ok(out)
}

/// The link-time (= run-time: position-dependent) address of `symbol`, from `nm`.
fn symbol_address(program: &Path, symbol: &str) -> Result<u64> {
    let out = Command::new("nm")
        .arg(program)
        .output()
        .context("running nm failed")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            let mut fields = l.split_whitespace();
            let address = fields.next()?;
            (fields.nth(1)? == symbol).then(|| u64::from_str_radix(address, 16).ok())?
        })
        .with_context(|| format!("{} has no symbol {symbol}", program.display()))
}

/// Runs `command` with `run WRITES` appended; the threads' phase as the workload timed it.
fn timed(mut command: Command) -> Result<f64> {
    self_timed(command.args(["run", &WRITES.to_string()]), "watch: ")
}
