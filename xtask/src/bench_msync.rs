//! `cargo xtask bench --msync`: what auditing costs a program that writes a shared file
//! mapping and flushes it with msync. The workload (`tests/workloads/msync.c bench`,
//! gcc -O2, no frame pointers) writes every page of a 16 MiB MAP_SHARED file on the
//! root filesystem and msyncs it (MS_SYNC), 16 times, and times its own loop: each
//! page takes a write fault per round (the sync cleans it), and each fault also sends
//! a `page_dirtied` record. Rounds interleave the bare program and `map-audit run`
//! on it; medians go to docs/benchmarks-msync.md.

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

const PAGES: u64 = 4096;
const SYNCS: u64 = 16;

pub fn bench(rounds: usize) -> Result<()> {
    if !crate::nix_is_root() {
        bail!("the benchmark loads eBPF programs and needs root; run it with sudo");
    }
    let root = workspace_root();
    let agent = root.join("target/release/map-audit");
    let program = build_program(&root)?;
    let file = root.join("target/bench/msync-data");
    let output = root.join("target/bench/msync.jsonl");
    let (mut bare, mut audited) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        eprintln!("xtask bench --msync: round {round}/{rounds}");
        bare.push(timed(Command::new(&program), &file)?);
        let mut under_agent = Command::new(&agent);
        under_agent
            .args(["run", "--output"])
            .arg(&output)
            .arg("--")
            .arg(&program);
        audited.push(timed(under_agent, &file)?);
        bare.push(timed(Command::new(&program), &file)?);
    }
    let faults = (PAGES * SYNCS) as f64;
    let bare = median(bare);
    let audited = median(audited);
    let row = |name: &str, elapsed: f64| {
        format!(
            "| {name} | {:.1} | {:.0} | x{:.2} |\n",
            elapsed / 1e6,
            (elapsed - bare) / faults,
            elapsed / bare
        )
    };
    let report = format!(
        "# msync benchmark\n\n\
         Command: `cargo xtask bench --msync --rounds {rounds}` (as root). The workload \
         writes every page of a {} MiB MAP_SHARED file on the root filesystem and msyncs it \
         (MS_SYNC), {SYNCS} times ({} page writes, {SYNCS} msyncs), and times its own loop \
         (`tests/workloads/msync.c bench`, gcc -O2, no frame pointers); each round runs the \
         bare program, the program under `map-audit run` (default, aggregated), and the bare \
         program again; medians over the rounds.\n\n\
         | | loop, ms | ns added per page write | ratio |\n|---|---|---|---|\n{}{}\n\
         Each write fault on a shared file mapping costs what any audited fault costs (the \
         stack walk, the kernel tally) plus one 64-byte `page_dirtied` record, which is \
         what makes `pages_written_since_last_sync` exact; each msync is one record with \
         the caller's stack. The msyncs' own write-back to the disk is in both rows. On the \
         first pass over the fresh file, one fault can map a whole large folio writable \
         (docs/events.md), so the first pass takes fewer faults than it writes pages.\n",
        (PAGES * 4096) >> 20,
        PAGES * SYNCS,
        row("bare", bare),
        row("map-audit run", audited),
    );
    println!("{report}");
    fs::write(root.join("docs/benchmarks-msync.md"), report)
        .context("writing docs/benchmarks-msync.md failed")
}

fn build_program(root: &Path) -> Result<PathBuf> {
    fs::create_dir_all(root.join("target/bench"))?;
    let out = root.join("target/bench/msync-workload");
    run(Command::new("gcc")
        .args(["-O2", "-g", "-o"])
        .arg(&out)
        .arg(root.join("map-audit-userspace/tests/workloads/msync.c")))?;
    Ok(out)
}

/// Runs `command` with `bench FILE PAGES SYNCS` appended; the loop as the workload
/// timed it.
fn timed(mut command: Command, file: &Path) -> Result<f64> {
    self_timed(
        command
            .arg("bench")
            .arg(file)
            .args([PAGES.to_string(), SYNCS.to_string()]),
        "workload: ",
    )
}
