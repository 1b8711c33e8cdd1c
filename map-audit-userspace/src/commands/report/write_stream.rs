//! Reads `write_fault`, `write_watch` and `region_synced` events out of a map-audit
//! stream. Other events
//! are counted and passed over; lines that are not JSON objects, or writes missing a
//! field the report needs, are counted as malformed and skipped.

use std::io::BufRead;

use anyhow::{Context, Result};

use super::resymbolize::Resymbolizer;
use serde::Deserialize;

/// How flame-graph stacks are rooted (`--group-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GroupBy {
    /// One graph for everything.
    None,
    /// A root frame per process: "comm (pid)".
    Process,
    /// A root frame per region: its path, or "[anon rw- 64 KiB]".
    Region,
    /// A root frame per container: "docker 4f5c0a2b9e8d", or "[host]".
    Container,
    /// A root frame per Kubernetes pod: "pod UID" (or NAMESPACE/NAME), or "[no pod]".
    Pod,
}

/// One `write_fault` event: one write (every-event) or an aggregate of `count`.
#[derive(Debug, Clone)]
pub struct Write {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<String>,
    /// "RUNTIME SHORT-ID" of its container (`None`: on the host, or an older stream).
    pub container: Option<String>,
    /// Its pod, NAMESPACE/NAME when known, else "pod UID".
    pub pod: Option<String>,
    pub region: RegionLabel,
    /// Frame labels, innermost first.
    pub stack: Vec<String>,
    pub count: u64,
    pub pages: u64,
    pub first_ts: String,
    pub last_ts: String,
}

/// What identifies a region in the report: path (or anonymous), prot and size.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegionLabel {
    pub path: Option<String>,
    pub prot: String,
    pub size: u64,
}

impl std::fmt::Display for RegionLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.as_deref().unwrap_or("[anon]");
        if self.prot == WATCH_PROT {
            return write!(f, "[watch {path}]");
        }
        write!(f, "{path} {} {}", self.prot, human_size(self.size))
    }
}

/// `RegionLabel::prot` of a watched write's label (its `path` is the watch).
const WATCH_PROT: &str = "watch";

pub fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} B"),
    }
}

/// One `region_synced` event: one msync (every-event) or an aggregate of `count`.
#[derive(Debug, Clone)]
pub struct Flush {
    pub pid: u32,
    pub comm: String,
    pub region: RegionLabel,
    /// Frame labels, innermost first (libc's msync first).
    pub stack: Vec<String>,
    pub count: u64,
    pub duration_ns: u64,
    /// Pages written since the previous msync (0 where msync writes nothing back).
    pub pages: u64,
    /// The calls failed (`result` is an errno name).
    pub failed: bool,
}

pub struct Stream {
    pub writes: Vec<Write>,
    /// `region_synced` events.
    pub flushes: Vec<Flush>,
    /// `write_watch` events (`map-audit watch`): `region.path` is the watch (its symbol
    /// or address), `pages` 0.
    pub watched: Vec<Write>,
    pub malformed_lines: u64,
    pub first_malformed_line: Option<u64>,
    /// Lines of other kinds (region events, stats...).
    pub other_events: u64,
}

#[derive(Deserialize)]
struct Event {
    event: String,
}

#[derive(Deserialize)]
struct WriteFault {
    pid: u32,
    comm: String,
    exe: Option<String>,
    /// Streams before these fields have neither.
    #[serde(default)]
    container: Option<ContainerField>,
    #[serde(default)]
    kubernetes: Option<KubernetesField>,
    ts: String,
    region: Region,
    stack: Vec<Frame>,
    count: Option<u64>,
    pages: Option<u64>,
    first_ts: Option<String>,
    last_ts: Option<String>,
}

#[derive(Deserialize)]
struct WriteWatch {
    pid: u32,
    comm: String,
    exe: Option<String>,
    #[serde(default)]
    container: Option<ContainerField>,
    #[serde(default)]
    kubernetes: Option<KubernetesField>,
    ts: String,
    address: String,
    symbol: Option<String>,
    stack: Vec<Frame>,
    count: Option<u64>,
    first_ts: Option<String>,
    last_ts: Option<String>,
}

#[derive(Deserialize)]
struct RegionSynced {
    pid: u32,
    comm: String,
    region: Region,
    stack: Vec<Frame>,
    count: Option<u64>,
    duration_ns: u64,
    pages_written_since_last_sync: Option<u64>,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct ContainerField {
    id: String,
    runtime: Option<String>,
    name: Option<String>,
}

impl ContainerField {
    /// Its name when known, else runtime and short id (as `docker ps` shows it).
    fn label(&self) -> String {
        if let Some(name) = &self.name {
            return name.clone();
        }
        let short: String = self.id.chars().take(12).collect();
        match &self.runtime {
            Some(runtime) => format!("{runtime} {short}"),
            None => short,
        }
    }
}

#[derive(Deserialize)]
struct KubernetesField {
    pod_uid: String,
    pod_name: Option<String>,
    pod_namespace: Option<String>,
}

impl KubernetesField {
    fn label(&self) -> String {
        match (&self.pod_namespace, &self.pod_name) {
            (Some(namespace), Some(name)) => format!("{namespace}/{name}"),
            _ => format!("pod {}", self.pod_uid),
        }
    }
}

#[derive(Deserialize)]
struct Region {
    start: String,
    end: String,
    prot: String,
    path: Option<String>,
}

#[derive(Deserialize)]
struct Frame {
    addr: String,
    symbol: Option<String>,
    module: Option<String>,
    /// Streams before this field have only the absolute `addr`.
    module_offset: Option<String>,
    module_address: Option<String>,
    module_build_id: Option<String>,
}

/// Reads the stream; with `resymbolizer`, frames recorded unnamed are named when their
/// module's debug file can be found now.
pub fn read(
    mut input: impl BufRead,
    mut resymbolizer: Option<&mut Resymbolizer>,
) -> Result<Stream> {
    let mut stream = Stream {
        writes: Vec::new(),
        flushes: Vec::new(),
        watched: Vec::new(),
        malformed_lines: 0,
        first_malformed_line: None,
        other_events: 0,
    };
    let mut bytes = Vec::new();
    let mut number = 0u64;
    loop {
        bytes.clear();
        if input
            .read_until(b'\n', &mut bytes)
            .context("reading the stream failed")?
            == 0
        {
            break;
        }
        number += 1;
        // A torn write or garbage after rotation is one malformed line, not the end.
        let parsed = match std::str::from_utf8(&bytes) {
            Ok(line) if line.trim().is_empty() => continue,
            Ok(line) => parse(line, &mut resymbolizer),
            Err(_) => Err(()),
        };
        match parsed {
            Ok(Some(Parsed::Fault(write))) => stream.writes.push(write),
            Ok(Some(Parsed::Watch(write))) => stream.watched.push(write),
            Ok(Some(Parsed::Flush(flush))) => stream.flushes.push(flush),
            Ok(None) => stream.other_events += 1,
            Err(()) => {
                stream.malformed_lines += 1;
                stream.first_malformed_line.get_or_insert(number);
            }
        }
    }
    Ok(stream)
}

enum Parsed {
    Fault(Write),
    Watch(Write),
    Flush(Flush),
}

type Names<'a, 'b> = &'a mut Option<&'b mut Resymbolizer>;

fn parse(line: &str, names: Names) -> Result<Option<Parsed>, ()> {
    let kind: Event = serde_json::from_str(line).map_err(|_| ())?;
    match kind.event.as_str() {
        "write_fault" => parse_fault(line, names).map(|w| Some(Parsed::Fault(w))),
        "write_watch" => parse_watch(line, names).map(|w| Some(Parsed::Watch(w))),
        "region_synced" => parse_flush(line, names).map(|f| Some(Parsed::Flush(f))),
        _ => Ok(None),
    }
}

fn parse_watch(line: &str, names: Names) -> Result<Write, ()> {
    let event: WriteWatch = serde_json::from_str(line).map_err(|_| ())?;
    Ok(Write {
        pid: event.pid,
        comm: event.comm,
        exe: event.exe,
        container: event.container.as_ref().map(ContainerField::label),
        pod: event.kubernetes.as_ref().map(KubernetesField::label),
        region: RegionLabel {
            path: Some(event.symbol.unwrap_or(event.address)),
            prot: WATCH_PROT.into(),
            size: 0,
        },
        stack: labels(&event.stack, names),
        count: event.count.unwrap_or(1),
        pages: 0,
        first_ts: event.first_ts.unwrap_or_else(|| event.ts.clone()),
        last_ts: event.last_ts.unwrap_or(event.ts),
    })
}

fn parse_flush(line: &str, names: Names) -> Result<Flush, ()> {
    let event: RegionSynced = serde_json::from_str(line).map_err(|_| ())?;
    Ok(Flush {
        pid: event.pid,
        comm: event.comm,
        region: region_label(event.region)?,
        stack: labels(&event.stack, names),
        count: event.count.unwrap_or(1),
        duration_ns: event.duration_ns,
        pages: event.pages_written_since_last_sync.unwrap_or(0),
        failed: event.result != 0,
    })
}

fn region_label(region: Region) -> Result<RegionLabel, ()> {
    let address =
        |text: &str| u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|_| ());
    let size = address(&region.end)?.saturating_sub(address(&region.start)?);
    Ok(RegionLabel {
        path: region.path,
        prot: region.prot,
        size,
    })
}

fn parse_fault(line: &str, names: Names) -> Result<Write, ()> {
    let event: WriteFault = serde_json::from_str(line).map_err(|_| ())?;
    Ok(Write {
        pid: event.pid,
        comm: event.comm,
        exe: event.exe,
        container: event.container.as_ref().map(ContainerField::label),
        pod: event.kubernetes.as_ref().map(KubernetesField::label),
        region: region_label(event.region)?,
        stack: labels(&event.stack, names),
        count: event.count.unwrap_or(1),
        pages: event.pages.unwrap_or(1),
        first_ts: event.first_ts.unwrap_or_else(|| event.ts.clone()),
        last_ts: event.last_ts.unwrap_or(event.ts),
    })
}

/// The symbol, or "module+offset" (file name, offset into the file: what perf and
/// addr2line print) when the frame has none and `names` finds none either.
fn frame_label(frame: &Frame, return_address: bool, names: Names) -> String {
    if frame.symbol.is_none()
        && let Some(name) = resymbolized(frame, return_address, names)
    {
        return name;
    }
    match (&frame.symbol, &frame.module) {
        (Some(symbol), _) => symbol.clone(),
        (None, Some(module)) => {
            let name = module.rsplit('/').next().unwrap_or(module);
            format!(
                "{name}+{}",
                frame.module_offset.as_ref().unwrap_or(&frame.addr)
            )
        }
        (None, None) => format!("[unknown {}]", frame.addr),
    }
}

fn labels(stack: &[Frame], names: Names) -> Vec<String> {
    stack
        .iter()
        .enumerate()
        .map(|(i, f)| frame_label(f, i > 0, names))
        .collect()
}

/// The name `names` finds now for an unnamed frame, by its module's build id. Outer
/// frames are return addresses: the call is the byte before (it may end a function).
fn resymbolized(frame: &Frame, return_address: bool, names: Names) -> Option<String> {
    let address = frame.module_address.as_deref()?;
    let address = u64::from_str_radix(address.trim_start_matches("0x"), 16).ok()?;
    let address = address - u64::from(return_address && address > 0);
    names
        .as_mut()?
        .name(frame.module_build_id.as_deref()?, address)
}
