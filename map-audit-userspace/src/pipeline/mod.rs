//! The pipeline thread: correlates records, symbolises stacks and writes JSON lines.
//! It owns everything that is not `Sync` (the blazesym symbolizer) or that may block
//! (file output), so the ring-buffer reader never waits on them.

pub(crate) mod aggregator;
pub mod captured_paths;
pub mod correlator;
pub mod items;
pub(crate) mod proc_seed;
pub mod rearm_rounds;
pub mod records;
pub(crate) mod region_filter;
pub(crate) mod region_mirror;
pub(crate) mod ringbuf_reader;

use std::{
    sync::mpsc::{Receiver, SyncSender, sync_channel},
    thread::JoinHandle,
};

use anyhow::{Context, Result};

use crate::{
    kernel::region_table::RegionTable,
    output::clock::Clock,
    output::events::{Body, Stats},
    output::events::{Counters, KernelCounters},
    output::json_writer::JsonWriter,
    pipeline::{
        correlator::{Correlator, Options},
        items::{Item, Timed},
    },
};

/// What the reader sends to the pipeline.
pub enum Message {
    Items(Vec<Item>),
    /// Decoding failures seen by the reader.
    Undecodable(u64),
    /// The flush interval passed: the pipeline starts the next interval in the kernel
    /// and asks the reader (`FlushBarrier`) to deliver every record made before that.
    /// With `--rearm-interval` a re-arm round starts once it is reported.
    Flush,
    /// Every record of interval `closing` has been delivered: report its aggregates.
    FlushReady {
        closing: u64,
    },
    /// Reopen the output file (SIGHUP after log rotation).
    ReopenOutput,
    /// `--unsynced-after`: check how long pages have stayed unsynced.
    CheckUnsynced,
    /// `watch`: the watchpoints are set on `threads` threads of `pid`.
    WatchesSet {
        pid: u32,
        points: Vec<crate::kernel::watchpoints::WatchPoint>,
        threads: usize,
    },
    /// Write `agent_stats` with these kernel counts.
    Stats(KernelCounters),
    /// Write `agent_stopped`, flush, and end the thread.
    Stop {
        kernel: KernelCounters,
        command_exit_code: Option<i32>,
    },
}

/// Batches in flight between reader and pipeline. When full the reader waits and the
/// ring buffer absorbs the burst; what it cannot hold the kernel counts as lost.
const CHANNEL_BATCHES: usize = 16;

/// Starts the thread. The correlator (and its symbolizer, which is not `Send`) is built
/// on it.
pub fn start(
    table: RegionTable,
    options: Options,
    clock: Clock,
    mut writer: JsonWriter,
    barrier: FlushBarrier,
) -> Result<(SyncSender<Message>, JoinHandle<()>)> {
    let (sender, receiver) = sync_channel(CHANNEL_BATCHES);
    let handle = std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || {
            run(
                &mut Correlator::new(table, options, clock),
                barrier,
                &mut writer,
                receiver,
            )
        })
        .context("starting the pipeline thread failed")?;
    Ok((sender, handle))
}

/// How a flush waits for its interval's records: the pipeline starts the next interval
/// in the kernel, then the reader drains the ring buffer and answers `FlushReady`. A
/// tally's counts are read before it can move on another interval, so each fold
/// splits them exactly at the interval's end (`map_audit_common::tally`).
pub struct FlushBarrier {
    /// Asks the reader for a drain, with the closing interval.
    pub drain: tokio::sync::mpsc::UnboundedSender<u64>,
}

fn run(
    correlator: &mut Correlator,
    barrier: FlushBarrier,
    writer: &mut JsonWriter,
    receiver: Receiver<Message>,
) {
    let mut events: Vec<Timed> = Vec::new();
    // A flush waiting for its drain (flushes due meanwhile are merged into it), and
    // whether a re-arm round starts once it is reported.
    let mut flush_pending = false;
    let mut round_due = false;
    for message in receiver {
        match message {
            Message::Items(items) => {
                for item in items {
                    correlator.handle(item, &mut events);
                    write_events(writer, &mut events);
                }
                correlator.release_held(false, &mut events);
                write_events(writer, &mut events);
                writer.flush();
            }
            Message::CheckUnsynced => {
                correlator.check_unsynced(monotonic_now_ns(), &mut events);
                write_events(writer, &mut events);
                writer.flush();
            }
            Message::Undecodable(n) => correlator.counters.records_undecodable += n,
            Message::ReopenOutput => writer.reopen(),
            Message::WatchesSet {
                pid,
                points,
                threads,
            } => {
                correlator.watches_set(pid, points, threads, &mut events);
                write_events(writer, &mut events);
                writer.flush();
            }
            Message::Flush => {
                // The flush interval is also the clock of the held aggregates.
                correlator.release_held(false, &mut events);
                write_events(writer, &mut events);
                if !flush_pending {
                    match correlator.start_flush() {
                        Some(closing) => {
                            flush_pending = barrier.drain.send(closing).is_ok();
                            round_due = correlator.rearms();
                        }
                        // Every-event mode: nothing to report first.
                        None => flush_pending = start_round(correlator, &barrier),
                    }
                }
            }
            Message::FlushReady { closing } => {
                flush_pending = false;
                correlator.flush(|a| a.take_all(closing), &mut events);
                correlator.release_held(false, &mut events);
                correlator.flush_watches(&mut events);
                correlator.flush_syncs(&mut events);
                write_events(writer, &mut events);
                writer.flush();
                if std::mem::take(&mut round_due) {
                    flush_pending = start_round(correlator, &barrier);
                }
            }
            Message::Stats(kernel) => {
                correlator.release_held(false, &mut events);
                correlator.reclaim_after_losses(&kernel, &mut events);
                write_events(writer, &mut events);
                write_stats(correlator, writer, kernel, false, None);
                writer.flush();
            }
            Message::Stop {
                kernel,
                command_exit_code,
            } => {
                correlator.flush(|a| a.take_all(u64::MAX), &mut events);
                correlator.release_held(true, &mut events);
                correlator.flush_watches(&mut events);
                correlator.flush_syncs(&mut events);
                correlator.check_unsynced(monotonic_now_ns(), &mut events);
                correlator.reclaim_after_losses(&kernel, &mut events);
                write_events(writer, &mut events);
                write_stats(correlator, writer, kernel, true, command_exit_code);
                writer.flush();
                return;
            }
        }
    }
}

/// Starts a re-arm round once the previous one is reported (its counts decide the
/// budget): a new flush interval at the same moment, so no aggregate spans two rounds,
/// then the re-arm. The faults between the previous flush and this moment are the
/// previous round's, reported by this flush: returns whether it waits for its drain.
fn start_round(correlator: &mut Correlator, barrier: &FlushBarrier) -> bool {
    correlator.start_round(monotonic_now_ns());
    let pending = correlator
        .start_flush()
        .is_some_and(|closing| barrier.drain.send(closing).is_ok());
    correlator.rearm_waiting();
    pending
}

/// CLOCK_MONOTONIC, the clock of the records' times (`bpf_ktime_get_ns`).
fn monotonic_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

fn write_events(writer: &mut JsonWriter, events: &mut Vec<Timed>) {
    for event in events.drain(..) {
        writer.write(event.ts_ns, event.body);
    }
}

fn write_stats(
    correlator: &Correlator,
    writer: &mut JsonWriter,
    kernel: KernelCounters,
    final_totals: bool,
    command_exit_code: Option<i32>,
) {
    let mut agent = correlator.agent_counters();
    agent.lines_unwritten = writer.lines_unwritten;
    let counters = Counters {
        kernel,
        agent,
        table_entries: correlator.table_entries(),
    };
    writer.write(
        None,
        Body::Stats(Stats {
            final_totals,
            counters,
            command_exit_code,
        }),
    );
}
