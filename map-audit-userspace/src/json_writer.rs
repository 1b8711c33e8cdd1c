//! Writes events as JSON lines to stdout or a file.

use std::{
    fs::OpenOptions,
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
};

use anyhow::{Context, Result};

use crate::{
    clock::Clock,
    events::{Body, Event, SCHEMA},
};

pub struct JsonWriter {
    out: BufWriter<Box<dyn Write + Send>>,
    host: String,
    clock: Clock,
    /// Lines that could not be written.
    pub lines_unwritten: u64,
    failed: bool,
}

impl JsonWriter {
    /// Writes to `path` (created 0600, appended to, never through a symlink) or stdout.
    pub fn open(path: Option<&Path>, clock: Clock) -> Result<Self> {
        let out: Box<dyn Write + Send> = match path {
            Some(path) => Box::new(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .with_context(|| format!("cannot open the output file {}", path.display()))?,
            ),
            None => Box::new(io::stdout()),
        };
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        Ok(Self {
            out: BufWriter::with_capacity(256 * 1024, out),
            host,
            clock,
            lines_unwritten: 0,
            failed: false,
        })
    }

    /// Writes one event stamped with the kernel time `ts_ns` (or now, when `None`).
    pub fn write(&mut self, ts_ns: Option<u64>, body: Body) {
        let ts = match ts_ns {
            Some(ns) => self.clock.format_monotonic(ns),
            None => self.clock.now(),
        };
        let event = Event {
            schema: SCHEMA,
            event: body.name(),
            ts,
            host: &self.host,
            body,
        };
        if self.failed {
            self.lines_unwritten += 1;
            return;
        }
        let result = serde_json::to_writer(&mut self.out, &event)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(err) = result {
            self.fail(err);
        }
    }

    pub fn flush(&mut self) {
        if !self.failed
            && let Err(err) = self.out.flush()
        {
            self.fail(err);
        }
    }

    fn fail(&mut self, err: io::Error) {
        // Keep running (the kernel side must not notice), count what is not written.
        log::error!("writing events failed, counting them as unwritten from now on: {err}");
        self.failed = true;
        self.lines_unwritten += 1;
    }
}
