//! The signals a long-running subcommand handles (`run`, `go-maps`).

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

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
