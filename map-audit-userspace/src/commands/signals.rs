//! The signals a long-running subcommand handles (`run`, `go-maps`), and the runtime
//! that catches them.

use anyhow::{Context, Result};
use tokio::{
    runtime::Runtime,
    signal::unix::{Signal, SignalKind, signal},
};

/// The single-threaded runtime a subcommand's read loop runs on, with the signals
/// caught from here on. Call before the first event: a SIGTERM sent right after it must
/// still flush and end with the final stats.
pub fn runtime_with_signals() -> Result<(Runtime, Signals)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime failed")?;
    let signals = {
        let _runtime = runtime.enter();
        Signals::install()?
    };
    Ok((runtime, signals))
}

/// The signals the agent handles: SIGINT and SIGTERM stop it, SIGHUP reopens the output.
pub struct Signals {
    pub interrupt: Signal,
    pub terminate: Signal,
    pub hangup: Signal,
}

impl Signals {
    /// Must run inside the runtime's context.
    pub fn install() -> Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())
                .context("installing the SIGINT handler failed")?,
            terminate: signal(SignalKind::terminate())
                .context("installing the SIGTERM handler failed")?,
            hangup: signal(SignalKind::hangup()).context("installing the SIGHUP handler failed")?,
        })
    }
}
