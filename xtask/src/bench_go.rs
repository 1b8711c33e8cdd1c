//! `cargo xtask bench --go`: what Go mode costs a map-heavy Go program. One goroutine
//! assigns into a map N times (`mapwriters serial N`, built with Go 1.19) and times its
//! own loop; rounds interleave the bare program, the program under `map-audit go-maps`
//! (exact mode), under `go-maps --crash-only`, and with `go-maps --all-go` running
//! (which hooks the program at its exec); medians and ratios go to
//! docs/benchmarks-go.md.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context, Result, bail};

use crate::{
    bench::{median, self_timed, stop, wait_for},
    go_toolchains, run, workspace_root,
};

/// Map writes per run: ~5 s traced at ~25 us per write.
const WRITES: u64 = 200_000;
/// Map writes per run against `--crash-only`, which costs nothing per write: a loop of
/// ~0.5 s, long enough for a difference of a percent to show over the noise.
const WRITES_CRASH_ONLY: u64 = 50_000_000;

pub fn bench(rounds: usize) -> Result<()> {
    if !crate::nix_is_root() {
        bail!("the benchmark loads eBPF programs and needs root; run it with sudo");
    }
    go_toolchains::ensure()?;
    let root = workspace_root();
    let agent = root.join("target/release/map-audit");
    let program = build_program(&root)?;
    let (mut bare, mut traced) = (Vec::new(), Vec::new());
    let (mut bare_long, mut crash_only, mut all_go) = (Vec::new(), Vec::new(), Vec::new());
    let under_agent = |extra: &[&str]| {
        let mut command = Command::new(&agent);
        command
            .arg("go-maps")
            .args(extra)
            .arg("--output")
            .arg(root.join("target/bench/go-maps.jsonl"))
            .arg("--")
            .arg(&program);
        command
    };
    for round in 1..=rounds {
        eprintln!("xtask bench --go: round {round}/{rounds}");
        bare.push(timed_loop(Command::new(&program), WRITES)?);
        traced.push(timed_loop(under_agent(&[]), WRITES)?);
        bare.push(timed_loop(Command::new(&program), WRITES)?);
        bare_long.push(timed_loop(Command::new(&program), WRITES_CRASH_ONLY)?);
        crash_only.push(timed_loop(
            under_agent(&["--crash-only"]),
            WRITES_CRASH_ONLY,
        )?);
        bare_long.push(timed_loop(Command::new(&program), WRITES_CRASH_ONLY)?);
        let mut agent = start_all_go(&agent, &root.join("target/bench/go-maps-all.jsonl"))?;
        let timed = timed_loop(Command::new(&program), WRITES_CRASH_ONLY);
        stop(&mut agent);
        all_go.push(timed?);
        bare_long.push(timed_loop(Command::new(&program), WRITES_CRASH_ONLY)?);
    }
    let (bare, traced) = (median(bare), median(traced));
    let (bare_long, crash_only, all_go) = (median(bare_long), median(crash_only), median(all_go));
    let per_write_bare = bare / WRITES as f64;
    let per_write_traced = traced / WRITES as f64;
    let report = format!(
        "# Go mode benchmark\n\n\
         Command: `cargo xtask bench --go --rounds {rounds}` (as root). One goroutine assigns \
         {WRITES} times into a 4096-entry `map[int]int` (`mapwriters serial`, Go 1.19) and \
         times its own loop; each round runs the bare program, the program under \
         `map-audit go-maps`, and the bare program again; medians over the rounds.\n\n\
         | | loop ns | ns per map write |\n|---|---|---|\n\
         | bare | {bare:.0} | {per_write_bare:.1} |\n\
         | under go-maps | {traced:.0} | {per_write_traced:.1} |\n\n\
         Go mode adds **{:.1} us per map write** (x{:.0} on this loop): two uprobe hits (entry \
         and return) and a stack walk at the entry. A diagnostic mode: run it on one process \
         while chasing a crash, not as an always-on audit.\n\n\
         `--crash-only` hooks the runtime's fatal paths alone. Against it the loop runs \
         {WRITES_CRASH_ONLY} writes (bare, under `go-maps --crash-only`, bare, per round):\n\n\
         | | loop ns | ns per map write |\n|---|---|---|\n\
         | bare | {bare_long:.0} | {:.2} |\n\
         | under go-maps --crash-only | {crash_only:.0} | {:.2} |\n\n\
         Ratio **x{:.3}**: no cost per map write, within the noise of the machine.\n\n\
         `--all-go` (every Go program of the host; the program is hooked at its exec) \
         running during the loop, interleaved with the same bare runs:\n\n\
         | | loop ns | ns per map write |\n|---|---|---|\n\
         | with go-maps --all-go running | {all_go:.0} | {:.2} |\n\n\
         Ratio **x{:.3}** against the bare runs.\n",
        (per_write_traced - per_write_bare) / 1000.0,
        traced / bare,
        bare_long / WRITES_CRASH_ONLY as f64,
        crash_only / WRITES_CRASH_ONLY as f64,
        crash_only / bare_long,
        all_go / WRITES_CRASH_ONLY as f64,
        all_go / bare_long,
    );
    println!("{report}");
    fs::write(root.join("docs/benchmarks-go.md"), report)
        .context("writing docs/benchmarks-go.md failed")
}

/// Starts `go-maps --all-go` writing to `output` and waits for its `go_maps_started`.
fn start_all_go(agent: &Path, output: &Path) -> Result<Child> {
    let _ = fs::remove_file(output);
    let mut child = Command::new(agent)
        .args(["go-maps", "--all-go", "--output"])
        .arg(output)
        .stdout(Stdio::null())
        .spawn()
        .context("starting map-audit go-maps --all-go failed")?;
    if let Err(err) = wait_for(output, "go_maps_started") {
        stop(&mut child);
        return Err(err);
    }
    Ok(child)
}

fn build_program(root: &Path) -> Result<PathBuf> {
    let out = root.join("target/bench/mapwriters-go1.19");
    fs::create_dir_all(root.join("target/bench"))?;
    let cache = root.join("target/bench/gocache");
    run(Command::new(go_toolchains::GO_1_19)
        .current_dir(root.join("map-audit-userspace/tests/go"))
        .env("GOTOOLCHAIN", "local")
        .env("GOCACHE", &cache)
        .env("GOPATH", root.join("target/bench/gopath"))
        .args(["build", "-o"])
        .arg(&out)
        .arg("mapwriters.go"))?;
    Ok(out)
}

/// Runs `command` with `serial WRITES` appended and returns the loop's own timing.
fn timed_loop(mut command: Command, writes: u64) -> Result<f64> {
    self_timed(
        command.args(["serial", &writes.to_string()]),
        "mapwriters: ",
    )
}
