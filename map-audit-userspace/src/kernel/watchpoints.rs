//! `map-audit watch`'s hardware watchpoints: one perf `PERF_TYPE_BREAKPOINT` write
//! event per watched address and thread, with `watch_write` on it. Each event has
//! `inherit` set, so threads (and children) started later get their own copy; threads
//! that started while the existing ones were listed are found by listing again until
//! no new one appears. Each hit costs a debug exception (~5 us here) plus the program.

use std::collections::BTreeSet;

use anyhow::{Context, Result, anyhow};
use aya::{
    Ebpf,
    programs::{
        PerfEvent, ProgramError,
        perf_event::{
            BreakpointConfig, PerfBreakpointLength, PerfBreakpointType, PerfEventConfig,
            PerfEventScope, SamplePolicy,
        },
    },
};

use crate::kernel::programs::program;

/// One watch, resolved to an address in the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchPoint {
    /// Its position on the command line (0-3), as `write_watch` gives it.
    pub index: u32,
    pub address: u64,
    /// Bytes watched: 1, 2, 4 or 8.
    pub length: u8,
    pub symbol: Option<String>,
    /// The file defining `symbol`.
    pub module: Option<String>,
}

/// The program that watchpoint hits run.
pub const PROGRAM: &str = "watch_write";

/// Sets every watch on every thread of `pid`; returns how many threads. The events
/// live as long as the program's links (until `ebpf` is dropped).
pub fn set(ebpf: &mut Ebpf, pid: u32, watches: &[WatchPoint]) -> Result<usize> {
    let program: &mut PerfEvent = program(ebpf, PROGRAM)?.try_into()?;
    program
        .load()
        .with_context(|| format!("the kernel rejected the {PROGRAM} program"))?;
    let mut covered = BTreeSet::new();
    loop {
        let threads = threads_of(pid)?;
        let new: Vec<u32> = threads.difference(&covered).copied().collect();
        if new.is_empty() {
            return Ok(covered.len());
        }
        for tid in new {
            for watch in watches {
                match attach(program, tid, watch) {
                    Ok(()) => {}
                    // A thread that ended since the listing needs no watchpoint.
                    Err(err) if is_errno(&err, libc::ESRCH) && tid != pid => break,
                    Err(err) => return Err(explain(err, pid, watch)),
                }
            }
            covered.insert(tid);
        }
    }
}

fn attach(program: &mut PerfEvent, tid: u32, watch: &WatchPoint) -> Result<(), ProgramError> {
    let length = match watch.length {
        1 => PerfBreakpointLength::Len1,
        2 => PerfBreakpointLength::Len2,
        4 => PerfBreakpointLength::Len4,
        _ => PerfBreakpointLength::Len8,
    };
    program.attach(
        PerfEventConfig::Breakpoint(BreakpointConfig::Data {
            r#type: PerfBreakpointType::Write,
            address: watch.address,
            length,
        }),
        PerfEventScope::OneProcess {
            pid: tid,
            cpu: None,
        },
        SamplePolicy::Period(1),
        true,
    )?;
    Ok(())
}

fn threads_of(pid: u32) -> Result<BTreeSet<u32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|_| anyhow!("pid {pid} exited before its watchpoints were set"))?;
    Ok(tasks
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

fn is_errno(err: &ProgramError, errno: i32) -> bool {
    matches!(err, ProgramError::SyscallError(e) if e.io_error.raw_os_error() == Some(errno))
}

/// One sentence for a watchpoint the kernel refused.
fn explain(err: ProgramError, pid: u32, watch: &WatchPoint) -> anyhow::Error {
    let what = match &watch.symbol {
        Some(symbol) => format!("`{symbol}` ({:#x})", watch.address),
        None => format!("{:#x}", watch.address),
    };
    let errno = match &err {
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        _ => None,
    };
    match errno {
        Some(libc::ENOSPC) => anyhow!(
            "no free debug register for a watchpoint on {what}: another debugger or perf user (gdb, perf, bpftrace) holds them; watch fewer addresses or stop that user"
        ),
        Some(libc::ESRCH) => anyhow!("pid {pid} exited before its watchpoints were set"),
        Some(libc::ENOENT | libc::EOPNOTSUPP | libc::ENODEV) => anyhow!(
            "this kernel has no hardware breakpoints for perf (CONFIG_HAVE_HW_BREAKPOINT), so `watch` cannot run here"
        ),
        Some(libc::EINVAL) => anyhow!(
            "the kernel refused a {}-byte watchpoint on {what}: it must be a user address aligned to its length",
            watch.length
        ),
        _ => anyhow::Error::new(err).context(format!("setting a watchpoint on {what} failed")),
    }
}
