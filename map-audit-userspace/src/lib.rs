//! map-audit: audits writes into memory mappings with eBPF and prints JSON lines.
//! The library holds every stage; `main.rs` is the command line.
//!
//! Pipeline, one file per stage: `loader` (eBPF hooks) -> `ringbuf_reader` -> `records`
//! (checked decoding) -> `correlator` (regions, processes) -> `symbolizer` (blazesym)
//! -> `json_writer`. `agent` wires them for `run`; `check` reports kernel support.

pub mod addresses;
pub mod agent;
pub mod aggregator;
pub mod cgroup;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config_file;
pub mod correlator;
pub mod events;
pub mod exec_image;
pub mod fault_hooks;
pub mod go_maps;
pub mod json_writer;
pub mod kernel_btf;
pub mod kernel_support;
pub mod kernel_tallies;
pub mod loader;
pub mod metrics;
pub mod metrics_server;
pub mod mount_points;
pub mod pipeline;
pub mod pretty_format;
pub mod proc_seed;
pub mod process_maps;
pub mod records;
pub mod region_filter;
pub mod region_mirror;
pub mod region_names;
pub mod region_table;
pub mod rendered_stacks;
pub mod report;
pub mod ringbuf_reader;
pub mod stats;
pub mod symbolizer;
pub mod target;
pub mod tracefs;
pub mod unwind;
pub mod vdso_image;
