//! The pipeline thread: correlates records, symbolises stacks and writes JSON lines.
//! It owns everything that is not `Sync` (the blazesym symbolizer) or that may block
//! (file output), so the ring-buffer reader never waits on them.

use std::{
    sync::mpsc::{Receiver, SyncSender, sync_channel},
    thread::JoinHandle,
};

use anyhow::{Context, Result};

use crate::{
    aggregator::Aggregator,
    clock::Clock,
    correlator::{Correlator, Item, Options, Timed},
    events::{Body, Stats},
    json_writer::JsonWriter,
    region_table::RegionTable,
    stats::{Counters, KernelCounters},
};

/// What the reader sends to the pipeline.
pub enum Message {
    Items(Vec<Item>),
    /// Decoding failures seen by the reader.
    Undecodable(u64),
    /// Report the open aggregates (the flush interval passed).
    Flush,
    /// Reopen the output file (SIGHUP after log rotation).
    ReopenOutput,
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
) -> Result<(SyncSender<Message>, JoinHandle<()>)> {
    let (sender, receiver) = sync_channel(CHANNEL_BATCHES);
    let handle = std::thread::Builder::new()
        .name("pipeline".into())
        .spawn(move || {
            run(
                &mut Correlator::new(table, options, clock),
                &mut writer,
                receiver,
            )
        })
        .context("starting the pipeline thread failed")?;
    Ok((sender, handle))
}

fn run(correlator: &mut Correlator, writer: &mut JsonWriter, receiver: Receiver<Message>) {
    let mut events: Vec<Timed> = Vec::new();
    for message in receiver {
        match message {
            Message::Items(items) => {
                for item in items {
                    correlator.handle(item, &mut events);
                    write_events(writer, &mut events);
                }
                writer.flush();
            }
            Message::Undecodable(n) => correlator.counters.records_undecodable += n,
            Message::ReopenOutput => writer.reopen(),
            Message::Flush => {
                correlator.flush(Aggregator::take_all, &mut events);
                write_events(writer, &mut events);
                writer.flush();
            }
            Message::Stats(kernel) => {
                correlator.reclaim_after_losses(&kernel, &mut events);
                write_events(writer, &mut events);
                write_stats(correlator, writer, kernel, false, None);
                writer.flush();
            }
            Message::Stop {
                kernel,
                command_exit_code,
            } => {
                correlator.flush(Aggregator::take_all, &mut events);
                correlator.reclaim_after_losses(&kernel, &mut events);
                write_events(writer, &mut events);
                write_stats(correlator, writer, kernel, true, command_exit_code);
                writer.flush();
                return;
            }
        }
    }
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
