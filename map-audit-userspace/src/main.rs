//! map-audit: audits writes into memory mappings with eBPF and prints JSON lines.
//!
//! Pipeline, one file per stage: `loader` (eBPF hooks) -> `ringbuf_reader` -> `records`
//! (checked decoding) -> `correlator` (regions, processes) -> `symbolizer` (blazesym)
//! -> `json_writer`. `agent` wires them for `run`; `check` reports kernel support.

mod agent;
mod aggregator;
mod cgroup;
mod check;
mod cli;
mod clock;
mod correlator;
mod events;
mod exec_image;
mod fault_hooks;
mod json_writer;
mod kernel_btf;
mod kernel_support;
mod loader;
mod mount_points;
mod pipeline;
mod proc_seed;
mod process_maps;
mod records;
mod region_filter;
mod region_mirror;
mod region_names;
mod region_table;
mod ringbuf_reader;
mod stats;
mod symbolizer;
mod target;
mod tracefs;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    // --kernel-log shows the eBPF programs' records (their target is the eBPF crate's
    // module path, `map_audit::...`) unless RUST_LOG says otherwise.
    let kernel_log = matches!(&cli.command, cli::Command::Run(args) if args.kernel_log);
    let default_filter = if kernel_log {
        "warn,map_audit=debug"
    } else {
        "warn"
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
        .init();
    let code = match cli.command {
        cli::Command::Check => check::run(),
        cli::Command::Run(args) => match agent::run(*args) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("map-audit: {err:#}");
                1
            }
        },
    };
    std::process::exit(code);
}
