//! Go mode, `map-audit go-maps`: finds goroutines writing one Go map at once in a
//! running, unmodified Go program, with both goroutines' stacks, before the runtime
//! kills the process with "concurrent map writes". Data flow:
//! `go_binary` (is it Go? which version?) -> `pclntab` (its functions) ->
//! `goid_offset` and `hooks` (+ `return_sites`) -> uprobes (`map-audit-ebpf`'s
//! `go_map_write`, `go_runtime_crash`) -> ring buffer -> `records` -> `race_reports`
//! (+ `go_symbols`) -> `events` -> the JSON writer. `run` wires them.
//! `--crash-only` hooks the fatal paths alone; a crash record then goes through
//! `crash_threads` (`thread_capture` + `go_unwind`) for every thread's stack.
//! `program` holds what is read once per binary; `--all-go` (`all_go`) finds every Go
//! program of the host, at the start and at each exec (`go_process_exec`).
//!
//! Cost: in exact mode every map write of the audited process takes two uprobe hits
//! (entry and return), ~10-14 us each on the VMs this was measured on: a diagnostic
//! mode, opt-in per process. `--crash-only` costs nothing until the process crashes.

pub mod all_go;
pub mod counters;
pub mod crash_threads;
pub mod events;
pub mod go_binary;
pub mod go_symbols;
pub mod go_unwind;
pub mod goid_offset;
pub mod hooks;
pub mod load;
pub mod pclntab;
pub mod program;
pub mod race_reports;
pub mod records;
pub mod return_sites;
pub mod run;
pub mod stack_switch;
pub mod thread_capture;
