//! Loads the eBPF object for Go mode: the same object as `run`, with the Go
//! configuration set and the tables Go mode does not use shrunk to almost nothing
//! (they are created with the object but never attached to).

use anyhow::{Context, Result};
use aya::{Ebpf, EbpfLoader, programs::TracePoint};
use map_audit_common::go_maps::GoConfig;
use map_audit_common::map_names;

use crate::kernel::{loader::EBPF_OBJECT, programs};

/// Maps only `run` uses, and the entries each keeps here.
const UNUSED_MAPS: [(&str, u32); 11] = [
    (map_names::REGIONS, 16),
    (map_names::UNWIND_ROWS, 1024),
    (map_names::FILE_TABLES, 1),
    (map_names::SCOPE, 1),
    (map_names::FORK_FALLBACKS, 1),
    (map_names::PATH_VERDICTS, 1),
    (map_names::PENDING_CALLS, 1),
    (map_names::RATE_BUCKETS, 1),
    (map_names::FAULT_TALLIES, 1),
    (map_names::SCOPE_COMMS, 1),
    (map_names::TABLE_VERSIONS, 2),
];

pub fn load(config: &GoConfig, ringbuf_bytes: u32) -> Result<Ebpf> {
    let mut loader = EbpfLoader::new();
    loader
        .override_global(map_names::GO_CONFIG, config, true)
        .map_max_entries(map_names::EVENTS, ringbuf_bytes);
    for (map, entries) in UNUSED_MAPS {
        loader.map_max_entries(map, entries);
    }
    loader
        .load(EBPF_OBJECT)
        .context("loading the eBPF object failed; run as root (or with CAP_BPF and CAP_PERFMON) on Linux 5.17+ with BTF; in a container, its seccomp profile must allow bpf() (older default profiles allow it only with CAP_SYS_ADMIN: use an unconfined profile)")
}

/// `--all-go`: every exec on the host is reported (`go_process_exec`).
pub fn attach_exec_records(ebpf: &mut Ebpf) -> Result<()> {
    let program: &mut TracePoint = programs::program(ebpf, "go_process_exec")?.try_into()?;
    program
        .load()
        .context("the kernel rejected the go_process_exec program")?;
    program.attach("sched", "sched_process_exec").context(
        "attaching to tracepoint sched:sched_process_exec failed; check that tracefs is mounted",
    )?;
    Ok(())
}
