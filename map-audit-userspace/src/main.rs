//! map-audit: audits writes into memory mappings with eBPF and prints JSON lines.
//!
//! Pipeline, one file per stage: `loader` (eBPF hooks) -> `ringbuf_reader` -> `records`
//! (checked decoding) -> `correlator` (regions, processes) -> `symbolizer` (blazesym)
//! -> `json_writer`. `agent` wires them for `run`; `check` reports kernel support.

mod agent;
mod check;
mod cli;
mod clock;
mod correlator;
mod events;
mod json_writer;
mod kernel_btf;
mod kernel_support;
mod loader;
mod mount_points;
mod pipeline;
mod process_maps;
mod records;
mod region_names;
mod region_table;
mod ringbuf_reader;
mod stats;
mod symbolizer;
mod target;
mod tracefs;

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = cli::Cli::parse();
    let code = match cli.command {
        cli::Command::Check => check::run(),
        cli::Command::Run(args) => match agent::run(args) {
            Ok(code) => code,
            Err(err) => {
                eprintln!("map-audit: {err:#}");
                1
            }
        },
    };
    std::process::exit(code);
}
