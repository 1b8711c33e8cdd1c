//! `map-audit watch`: `run`'s machinery (scope, region table, unwind tables, stack
//! walk, pipeline, counters) on one process, with hardware watchpoints in place of the
//! fault hooks. The watches are resolved in the process (`watch_spec`, then
//! `proc::data_symbols`) and set on its threads (`kernel::watchpoints`) before output
//! starts; a command is stopped at its exec for that, so its first write is seen.

pub mod watch_spec;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;

use crate::{
    commands::{
        cli::{RunArgs, WatchArgs},
        run,
    },
    kernel::{
        programs::AttachedHook,
        watchpoints::{self, WatchPoint},
    },
    proc::{
        data_symbols,
        target::{self, HeldCommand},
    },
};
use watch_spec::{WatchSpec, WatchTarget};

/// `run`'s options at their defaults, for `watch` to set its own on.
#[derive(Parser)]
struct RunDefaults {
    #[command(flatten)]
    run: RunArgs,
}

/// Runs `watch`; returns the process exit code.
pub fn run(args: WatchArgs) -> Result<i32> {
    let specs = watch_spec::parse_all(&args.symbols, &args.addresses)?;
    if args.pid.is_some() && !args.command.is_empty() {
        bail!("give --pid PID or -- COMMAND, not both: watch follows one process");
    }
    if let Some(pid) = args.pid {
        target::check_pids(&[pid])?;
    }
    let mut run_args = RunDefaults::try_parse_from(["map-audit"])
        .context("building run's default options failed")?
        .run;
    run_args.pids = args.pid.into_iter().collect();
    run_args.command = args.command;
    run_args.every_event = args.every_event;
    run_args.flush_interval = args.flush_interval;
    run_args.unwind = args.unwind;
    run_args.max_stack_depth = args.max_stack_depth;
    run_args.output = args.output;
    run_args.format = args.format;
    run_args.stats_interval = args.stats_interval;
    run_args.rate_limit = args.rate_limit;
    run::audit(run_args, Some(specs))
}

/// Resolves the watches in the process (a command: stopped at its exec first) and sets
/// them on its threads: (pid, watches, threads). A command that cannot be watched is
/// killed, not left to run unwatched.
pub fn set_watches(
    ebpf: &mut aya::Ebpf,
    args: &RunArgs,
    specs: &[WatchSpec],
    held: Option<&mut HeldCommand>,
    hooks: &mut Vec<AttachedHook>,
) -> Result<(u32, Vec<WatchPoint>, usize)> {
    let (pid, from_command) = match held {
        Some(held) => {
            held.run_to_exec()?;
            (held.pid, true)
        }
        None => (args.pids[0], false),
    };
    let set = resolve(pid, specs, from_command)
        .and_then(|points| Ok((watchpoints::set(ebpf, pid, &points)?, points)));
    let (threads, points) = match set {
        Ok(set) => set,
        Err(err) => {
            if from_command {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            return Err(err);
        }
    };
    hooks.push(AttachedHook {
        role: "watch",
        hook: format!("perf_event:breakpoint (program {})", watchpoints::PROGRAM),
        reason: "hardware watchpoints: every write to the watched bytes, on every thread".into(),
    });
    Ok((pid, points, threads))
}

/// The watches as addresses in `pid`, with their lengths settled.
fn resolve(pid: u32, specs: &[WatchSpec], from_command: bool) -> Result<Vec<WatchPoint>> {
    let mut points = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        let point = match &spec.target {
            WatchTarget::Address(address) => WatchPoint {
                index: index as u32,
                address: *address,
                length: spec.length.unwrap_or(8),
                symbol: None,
                module: None,
            },
            WatchTarget::Symbol(name) => {
                let found = data_symbols::find(pid, name).map_err(|err| {
                    if from_command {
                        anyhow!("{err}; a command's libraries load after its watchpoints are set, so watch a library's variable by --pid")
                    } else {
                        err
                    }
                })?;
                let length = match spec.length {
                    Some(length) => length,
                    None => symbol_length(name, found.size, found.address),
                };
                if !found.address.is_multiple_of(u64::from(length)) {
                    bail!(
                        "`{name}` is at {:#x}, not aligned to {length} bytes: give a length it is aligned to, e.g. `{name}:1`",
                        found.address
                    );
                }
                WatchPoint {
                    index: index as u32,
                    address: found.address,
                    length,
                    symbol: Some(name.clone()),
                    module: Some(found.module),
                }
            }
        };
        points.push(point);
    }
    Ok(points)
}

/// The length to watch a symbol of `size` bytes at `address` with: its size when that
/// is 1, 2, 4 or 8, else the first 8 bytes (with a warning), or fewer where alignment
/// asks.
fn symbol_length(name: &str, size: u64, address: u64) -> u8 {
    if size > 8 {
        log::warn!(
            "`{name}` is {size} bytes: only its first 8 are watched (give NAME:LEN for fewer)"
        );
    }
    let wanted = if size == 0 { 8 } else { size.min(8) };
    [8u8, 4, 2, 1]
        .into_iter()
        .find(|&len| u64::from(len) <= wanted && address.is_multiple_of(u64::from(len)))
        .unwrap_or(1)
}

#[cfg(test)]
#[test]
fn symbol_lengths_follow_size_and_alignment() {
    assert_eq!(symbol_length("a", 8, 0x1000), 8);
    assert_eq!(symbol_length("a", 4, 0x1000), 4);
    assert_eq!(symbol_length("a", 24, 0x1000), 8);
    assert_eq!(symbol_length("a", 8, 0x1004), 4);
    assert_eq!(symbol_length("a", 3, 0x1000), 2);
    assert_eq!(symbol_length("a", 0, 0x1001), 1);
}
