//! `--crash-only`: the crash's `go_crash_thread` events. The crash uprobe stopped the
//! process;
//! `thread_capture` holds each thread while `go_unwind` walks its stack (through a
//! switch from `g0`, with `stack_switch`'s offsets) and finds its goroutine;
//! `go_symbols` names the frames after the process is let go.

use anyhow::Result;
use map_audit_common::go_maps::GoCrashRecord;

use super::{
    events::CrashThread,
    go_unwind::{self, Registers, Switch},
    hooks::is_map_function,
    race_reports::RaceReports,
    stack_switch::SwitchLayout,
    thread_capture,
};

/// Every thread of the crashed process, the crashing one first, then by tid; and when
/// the process was let go (CLOCK_MONOTONIC ns).
pub fn read(
    reports: &mut RaceReports,
    record: &GoCrashRecord,
    goid_offset: u32,
    switch_layout: Option<&SwitchLayout>,
) -> Result<(Vec<CrashThread>, u64)> {
    let functions = reports.symbols.functions();
    let bias = reports.symbols.load_bias();
    let capture = thread_capture::capture(
        record.header.tgid,
        record.stopped != 0,
        |tid, regs, memory| {
            let read = |addr| memory.read_u64(addr);
            let from = Registers {
                ip: regs.rip,
                sp: regs.rsp,
                bp: regs.rbp,
            };
            let running = go_unwind::goroutine(regs.r14, regs.fs_base, regs.rsp, goid_offset, read);
            // On g0, the walk goes on into the goroutine that switched to it.
            let switch = match (running, switch_layout) {
                (Some((g0, 0)), Some(layout)) => Some(Switch { g0, layout }),
                _ => None,
            };
            let walk = go_unwind::walk(functions, bias, from, switch, read);
            (tid, running.map(|(_, goid)| goid), walk)
        },
    );
    let capture = match capture {
        Ok(capture) => capture,
        Err(err) => {
            reports.counters.crash_captures_failed += 1;
            return Err(err);
        }
    };
    reports.counters.crash_captures += 1;
    reports.counters.threads_uncaptured += capture.uncaptured;
    let mut threads: Vec<CrashThread> = capture
        .threads
        .into_iter()
        .map(|(tid, goid, walk)| {
            let (stack, unknown) = reports.symbols.frames(&walk.addrs);
            reports.counters.frames_unknown += unknown;
            let map_function = stack
                .iter()
                .filter_map(|f| f.symbol.as_deref())
                .find(|name| is_map_function(name))
                .map(str::to_string);
            CrashThread {
                pid: record.header.tgid,
                crash_tid: record.writer.tid,
                tid,
                goid,
                crashing: tid == record.writer.tid,
                map_function,
                stack,
                stack_truncated: walk.truncated,
            }
        })
        .collect();
    threads.sort_by_key(|t| (!t.crashing, t.tid));
    Ok((threads, capture.resumed_ns))
}
