//! The read loop every auditing subcommand shares (`run`, `watch`, `go-maps`): the ring
//! buffer drained when the kernel wakes it and on a short timer, stats on their
//! interval, SIGHUP to reopen the output, and the stop rules: SIGINT or SIGTERM, the
//! command's exit, the followed process's end, `--duration`. On stop the programs are
//! detached before the last drain, so nothing is produced after it and the final
//! counts add up exactly.

use std::time::Duration;

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    commands::signals::Signals,
    proc::target::{self, HeldCommand},
};

/// How often records submitted without a wake-up are collected.
const DRAIN_INTERVAL: Duration = Duration::from_millis(20);

/// How long programs already running when they are detached get to finish.
const DETACH_GRACE: Duration = Duration::from_millis(20);

/// What a subcommand does at each step of the loop. A `false` return ends the run:
/// what it feeds (the output, the pipeline) failed, and says so itself.
pub(crate) trait Reader {
    /// A wake-up of the subcommand's own (`run`: flush ticks and drain requests).
    type Wakeup;

    /// Moves everything in the ring buffer on.
    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> bool;

    /// Every drain interval, before its drain.
    fn tick(&mut self) -> bool;

    /// The stats interval passed.
    fn stats(&mut self) -> Result<bool>;

    /// SIGHUP: reopen the output (log rotation).
    fn reopen_output(&mut self) -> bool;

    /// The subcommand's own wake-up; a reader without any never completes.
    async fn wakeup(&mut self) -> Self::Wakeup;

    fn on_wakeup(&mut self, wakeup: Self::Wakeup, ring: &mut RingBuf<MapData>) -> bool;

    /// Detaches the programs: called once, before the final drain.
    fn detach(&mut self);
}

/// When the run ends, besides SIGINT and SIGTERM.
#[derive(Default)]
pub(crate) struct StopWhen {
    /// The command the agent ran: its exit ends the run, and gives the exit code.
    pub command: Option<HeldCommand>,
    /// A process whose end ends the run (`--pid` of `watch` and `go-maps`).
    pub pid_gone: Option<u32>,
    pub duration: Option<Duration>,
}

/// Reads `ring` into `reader` until a stop rule fires; returns the command's exit code
/// when the agent ran one. The command is released here, once the loop is ready.
pub(crate) async fn read_until_stopped<R: Reader>(
    ring: RingBuf<MapData>,
    reader: &mut R,
    mut signals: Signals,
    stop: StopWhen,
    stats_interval: Option<Duration>,
) -> Result<Option<i32>> {
    // SAFETY: the ring buffer owns its fd and keeps it open for as long as the AsyncFd
    // that owns the ring buffer exists.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|err| err.into_parts().1)
        .context("polling the ring buffer failed")?;
    let mut drain_tick = tokio::time::interval(DRAIN_INTERVAL);
    let mut stats_tick = tokio::time::interval(stats_interval.unwrap_or(Duration::from_secs(3600)));
    stats_tick.tick().await;
    let deadline = tokio::time::sleep(stop.duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    // A disabled branch's receiver is never polled.
    let mut exit_rx = match &stop.command {
        Some(command) => command.release_and_wait()?,
        None => tokio::sync::oneshot::channel().1,
    };
    let mut gone_rx = match stop.pid_gone {
        Some(pid) => target::when_gone(pid)?,
        None => tokio::sync::oneshot::channel().1,
    };
    let exit_code = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("polling the ring buffer failed")?;
                if !reader.drain(guard.get_inner_mut()) {
                    break None;
                }
                guard.clear_ready();
            }
            _ = drain_tick.tick() => {
                if !reader.tick() || !reader.drain(ring.get_mut()) {
                    break None;
                }
            }
            _ = stats_tick.tick(), if stats_interval.is_some() => {
                if !reader.stats()? {
                    break None;
                }
            }
            wakeup = reader.wakeup() => {
                if !reader.on_wakeup(wakeup, ring.get_mut()) {
                    break None;
                }
            }
            _ = signals.hangup.recv() => {
                if !reader.reopen_output() {
                    break None;
                }
            }
            _ = signals.interrupt.recv() => break None,
            _ = signals.terminate.recv() => break None,
            _ = &mut deadline, if stop.duration.is_some() => break None,
            code = &mut exit_rx, if stop.command.is_some() => {
                break Some(code.context("the command waiter stopped")??);
            }
            _ = &mut gone_rx, if stop.pid_gone.is_some() => break None,
        }
    };
    reader.detach();
    tokio::time::sleep(DETACH_GRACE).await;
    // Everything the kernel committed before the programs were detached still gets out.
    reader.drain(ring.get_mut());
    Ok(exit_code)
}
