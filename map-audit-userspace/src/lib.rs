//! map-audit: audits writes into memory mappings with eBPF and prints JSON lines.
//! The library holds every stage; `main.rs` is the command line.
//!
//! The folders follow the data: `kernel` (load the eBPF programs, attach the hooks,
//! edit the kernel's tables) -> `pipeline` (ring buffer reader -> checked record
//! decoding -> correlator: processes, regions, aggregates) -> `stacks` (unwind tables
//! for the kernel's walk, symbolisation) -> `output` (events, JSON lines, metrics).
//! `proc` reads /proc; `commands` has one module per subcommand (`run` wires the
//! stages together).

pub mod commands;
pub mod kernel;
pub mod output;
pub mod pipeline;
pub mod proc;
pub mod stacks;
