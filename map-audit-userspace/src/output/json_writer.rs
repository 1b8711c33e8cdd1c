//! Writes events as JSON lines to stdout or a file.
//!
//! A file is created 0600, appended to (never truncated), never opened through a
//! symlink, and reopened on request (SIGHUP after log rotation). When the output
//! fails (a collector that closed the pipe), the writer says so once, counts every
//! line it could not write, and raises `closed` so the agent stops.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use anyhow::{Context, Result};

use crate::{
    output::clock::Clock,
    output::events::{Body, Event, SCHEMA},
    output::metrics,
    output::pretty_format,
};

pub struct JsonWriter {
    out: BufWriter<Box<dyn Write + Send>>,
    path: Option<PathBuf>,
    host: String,
    clock: Clock,
    /// Lines that could not be written.
    pub lines_unwritten: u64,
    /// Why the output failed, once it has; the agent's loop watches it and stops.
    pub closed: Arc<OnceLock<String>>,
    /// `--format pretty`: a readable line per event instead of JSON.
    pub pretty: bool,
}

fn open_file(path: &Path) -> Result<File> {
    match OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(file) => Ok(file),
        // O_NOFOLLOW on a symlink: say why rather than "too many levels of symbolic links".
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => Err(anyhow::anyhow!(
            "the output file {} is a symbolic link: the agent runs as root and does not write through links (one planted in a shared directory could aim it at any file; docs/security.md); give the link's target instead",
            path.display()
        )),
        Err(err) => {
            Err(err).with_context(|| format!("cannot open the output file {}", path.display()))
        }
    }
}

impl JsonWriter {
    /// Writes to `path` or stdout.
    pub fn open(path: Option<&Path>, clock: Clock) -> Result<Self> {
        let out: Box<dyn Write + Send> = match path {
            Some(path) => Box::new(open_file(path)?),
            None => Box::new(io::stdout()),
        };
        let host = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        Ok(Self {
            out: BufWriter::with_capacity(256 * 1024, out),
            path: path.map(Path::to_path_buf),
            host,
            clock,
            lines_unwritten: 0,
            closed: Arc::new(OnceLock::new()),
            pretty: false,
        })
    }

    /// The clock its timestamps come from.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Writes to any writer (benchmarks, tests).
    pub fn with_writer(out: Box<dyn Write + Send>, clock: Clock) -> Self {
        Self {
            out: BufWriter::with_capacity(256 * 1024, out),
            path: None,
            host: "bench".into(),
            clock,
            lines_unwritten: 0,
            closed: Arc::new(OnceLock::new()),
            pretty: false,
        }
    }

    /// After log rotation: flushes to the old file, then appends to a new one at the
    /// same path. Nothing is written twice or lost around it.
    pub fn reopen(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        self.flush();
        match open_file(&path) {
            Ok(file) => self.out = BufWriter::with_capacity(256 * 1024, Box::new(file)),
            Err(err) => log::error!("{err:#}; still writing to the previous file"),
        }
    }

    /// Writes one event stamped with the kernel time `ts_ns` (or now, when `None`).
    pub fn write(&mut self, ts_ns: Option<u64>, body: Body) {
        if self.closed.get().is_some() {
            self.lines_unwritten += 1;
            return;
        }
        let ts = match ts_ns {
            Some(ns) => self.clock.format_monotonic(ns),
            None => self.clock.now(),
        };
        if let Some(metrics) = metrics::get() {
            metrics.event_written(body.name());
            if let Body::Stats(stats) = &body {
                metrics.counters(&stats.counters);
            }
        }
        let event = Event {
            schema: SCHEMA,
            event: body.name(),
            ts,
            host: &self.host,
            body,
        };
        let result = if self.pretty {
            // Stamped when written, so lines stay in order: an aggregate written at a
            // flush shows its own span in the line.
            let written = self.clock.now();
            serde_json::to_value(&event)
                .map(|value| pretty_format::line(&value, &written))
                .map_err(io::Error::from)
                .and_then(|line| writeln!(self.out, "{line}"))
        } else {
            serde_json::to_writer(&mut self.out, &event)
                .map_err(io::Error::from)
                .and_then(|()| self.out.write_all(b"\n"))
        };
        if let Err(err) = result {
            self.fail(err);
        }
    }

    pub fn flush(&mut self) {
        if self.closed.get().is_none()
            && let Err(err) = self.out.flush()
        {
            self.fail(err);
        }
    }

    fn fail(&mut self, err: io::Error) {
        // Counted from here on; the lines still buffered are lost with the output.
        // The first error is the one reported; later ones only add to the count.
        let _ = self.closed.set(err.to_string());
        self.lines_unwritten += 1;
    }
}
