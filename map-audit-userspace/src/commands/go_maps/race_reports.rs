//! Turns Go mode's records into events. A race is printed the first time its (map,
//! pair of call sites) is seen in an interval; repeats in the same interval are only
//! counted, and listed in the next `go_maps_stats` (a racing pair can collide
//! thousands of times a second).

use std::{collections::HashMap, sync::Arc};

use map_audit_common::go_maps::{
    CRASH_FATAL, CRASH_FATAL_PANIC, GoCrashRecord, GoRaceRecord, GoWriter,
};

use super::{
    counters::GoAgentCounters,
    events::{ConcurrentWrite, CrashKind, OpenWrite, RuntimeCrash, Suppressed, Writer},
    go_symbols::GoSymbols,
    hooks::{Hooks, Mode},
    records::frames,
};
use crate::output::clock::Clock;

/// (map, the two writers' call sites, sorted).
type RaceKey = (u64, u64, u64);

pub struct RaceReports {
    pub symbols: GoSymbols,
    hooks: Arc<Hooks>,
    go_version: String,
    clock: Clock,
    /// Races seen this interval: how many were not printed.
    seen: HashMap<RaceKey, u64>,
    pub counters: GoAgentCounters,
}

impl RaceReports {
    pub fn new(symbols: GoSymbols, hooks: Arc<Hooks>, go_version: String, clock: Clock) -> Self {
        Self {
            symbols,
            hooks,
            go_version,
            clock,
            seen: HashMap::new(),
            counters: GoAgentCounters::default(),
        }
    }

    /// The event for a race, or `None` when its pair was already reported this interval.
    pub fn race(&mut self, record: &GoRaceRecord) -> Option<ConcurrentWrite> {
        let (a, b) = (call_site(&record.holder), call_site(&record.current));
        let key = (record.map, a.min(b), a.max(b));
        if let Some(repeats) = self.seen.get_mut(&key) {
            *repeats += 1;
            self.counters.races_suppressed += 1;
            return None;
        }
        self.seen.insert(key, 0);
        self.counters.races_reported += 1;
        Some(ConcurrentWrite {
            pid: record.header.tgid,
            comm: comm(&record.header.comm),
            go_version: self.go_version.clone(),
            map: record.map,
            overlap_ns: record
                .current
                .start_ns
                .saturating_sub(record.holder.start_ns),
            writers: [self.writer(&record.holder), self.writer(&record.current)],
        })
    }

    pub fn crash(&mut self, record: &GoCrashRecord) -> RuntimeCrash {
        self.counters.crashes_reported += 1;
        let message = &record.message[..record.message_len as usize];
        let open = (record.in_map_write != 0).then(|| {
            let hook = self.hooks.get(record.map_hook);
            OpenWrite {
                map: record.map,
                function: hook.map(|h| h.function.clone()),
                operation: hook.map(|h| h.operation),
            }
        });
        let (stack, stack_truncated) = self.stack(&record.writer);
        RuntimeCrash {
            pid: record.header.tgid,
            tid: record.writer.tid,
            comm: comm(&record.header.comm),
            goid: record.writer.goid,
            kind: match record.crash {
                CRASH_FATAL => CrashKind::Fatal,
                CRASH_FATAL_PANIC => CrashKind::UnrecoveredPanic,
                _ => CrashKind::Panic,
            },
            message: (!message.is_empty()).then(|| String::from_utf8_lossy(message).into_owned()),
            in_map_write: open,
            stack,
            stack_truncated,
            threads_captured: None,
            threads_error: None,
        }
    }

    pub fn mode(&self) -> Mode {
        self.hooks.mode
    }

    /// The races folded this interval, and a fresh interval.
    pub fn take_suppressed(&mut self) -> Vec<Suppressed> {
        let mut out = Vec::new();
        for ((map, a, b), count) in std::mem::take(&mut self.seen) {
            if count > 0 {
                out.push(Suppressed {
                    map,
                    call_sites: [self.symbols.call_site(a), self.symbols.call_site(b)],
                    count,
                });
            }
        }
        out.sort_by_key(|s| std::cmp::Reverse(s.count));
        out
    }

    fn writer(&mut self, writer: &GoWriter) -> Writer {
        let (stack, stack_truncated) = self.stack(writer);
        let hook = self.hooks.get(writer.hook);
        Writer {
            goid: writer.goid,
            tid: writer.tid,
            operation: hook.map(|h| h.operation),
            function: hook.map(|h| h.function.clone()),
            entered_ts: self.clock.format_monotonic(writer.start_ns),
            stack,
            stack_truncated,
        }
    }

    /// The hooked function's entry, then the caller and its callers.
    fn stack(&mut self, writer: &GoWriter) -> (Vec<crate::output::events::Frame>, bool) {
        if let Some(hook) = self.hooks.get(writer.hook) {
            // The uprobe fired at the hook's entry: that gives a PIE binary's load bias.
            self.symbols
                .set_load_bias(writer.entry_ip.wrapping_sub(hook.entry));
        }
        let mut addrs = vec![writer.entry_ip];
        addrs.extend_from_slice(frames(writer));
        let (stack, unknown) = self.symbols.frames(&addrs);
        self.counters.frames_unknown += unknown;
        (stack, writer.stack_truncated != 0)
    }
}

/// The writer's caller: the return address into the Go code that wrote.
fn call_site(writer: &GoWriter) -> u64 {
    frames(writer).first().copied().unwrap_or(0)
}

fn comm(bytes: &[u8]) -> String {
    let len = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..len]).into_owned()
}
