//! The JSON events the agent prints, schema `map-audit/v1` (see
//! `schema/map-audit-v1.schema.json`). Fields are only ever added, never renamed.
//! Addresses are lowercase hex strings: JSON numbers above 2^53 lose precision in most
//! collectors.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

pub use map_audit_common::counters::{AgentCounters, KernelCounters};

use crate::{
    kernel::{programs::AttachedHook, region_table::TableEntries},
    output::region_names::{RegionJson, prot_string},
};

pub const SCHEMA: &str = "map-audit/v1";

/// One output line: the common envelope and the kind's own fields.
#[derive(Debug, Serialize)]
pub struct Event<'a> {
    pub schema: &'static str,
    pub event: &'static str,
    /// RFC 3339 UTC with nanoseconds.
    pub ts: String,
    pub host: &'a str,
    #[serde(flatten)]
    pub body: Body,
}

/// The kind-specific part of an event.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Body {
    AgentStarted(AgentStarted),
    Region(RegionEvent),
    WriteFault(WriteFault),
    WatchStarted(WatchStarted),
    WriteWatch(WriteWatch),
    Stats(Stats),
    /// An event kind a subcommand defines (Go mode's), in JSON form.
    Other(OtherEvent),
}

impl Body {
    /// The `event` name of this body.
    pub fn name(&self) -> &'static str {
        match self {
            Body::AgentStarted(_) => "agent_started",
            Body::Region(r) => r.kind.name(),
            Body::WriteFault(_) => "write_fault",
            Body::WatchStarted(_) => "watch_started",
            Body::WriteWatch(_) => "write_watch",
            Body::Stats(s) if s.final_totals => "agent_stopped",
            Body::Stats(_) => "agent_stats",
            Body::Other(event) => event.name,
        }
    }
}

/// The fields of an event kind defined outside this module (Go mode's), and its name.
#[derive(Debug, Serialize)]
pub struct OtherEvent {
    #[serde(skip)]
    pub name: &'static str,
    #[serde(flatten)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl OtherEvent {
    /// `event`'s fields: it serialises to a JSON object, as every event struct does.
    pub fn new(name: &'static str, event: &impl Serialize) -> Self {
        let fields = match serde_json::to_value(event) {
            Ok(serde_json::Value::Object(fields)) => fields,
            other => unreachable!("event {name} is not a JSON object: {other:?}"),
        };
        Self { name, fields }
    }
}

#[derive(Debug, Serialize)]
pub struct AgentStarted {
    pub version: &'static str,
    pub kernel_release: String,
    pub hooks: Vec<AttachedHook>,
    pub scope: Scope,
}

#[derive(Debug, Serialize)]
pub struct Scope {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    /// The spawned command, if any.
    pub command: Option<Vec<String>>,
}

/// Who did it.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessInfo {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// `/proc/PID/exe`, null when the process was gone before the agent looked.
    pub exe: Option<String>,
}

/// Which region event.
#[derive(Debug, Clone, Copy)]
pub enum RegionKind {
    /// `region_mapped`, with where the region came from: "mmap", "mremap", "fork"
    /// (inherited), "proc" (there before the agent started).
    Mapped(&'static str),
    Unmapped,
    Protected,
}

impl RegionKind {
    pub fn name(self) -> &'static str {
        match self {
            RegionKind::Mapped(_) => "region_mapped",
            RegionKind::Unmapped => "region_unmapped",
            RegionKind::Protected => "region_protected",
        }
    }
}

/// `region_mapped`, `region_unmapped` and `region_protected`.
#[derive(Debug, Serialize)]
pub struct RegionEvent {
    #[serde(skip)]
    pub kind: RegionKind,
    #[serde(flatten)]
    pub process: ProcessInfo,
    /// The region (for an unmap or mprotect: as it was before).
    pub region: RegionJson,
    /// `region_mapped` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<&'static str>,
    /// Unmap and mprotect: the part of the region changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<Range>,
    /// `region_protected` only: the new protection ("r--", "rw-", ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_prot: Option<String>,
}

impl RegionEvent {
    pub fn new(
        kind: RegionKind,
        process: ProcessInfo,
        region: RegionJson,
        range: Option<Range>,
        new_prot: Option<u32>,
    ) -> Self {
        Self {
            kind,
            process,
            region,
            origin: match kind {
                RegionKind::Mapped(origin) => Some(origin),
                _ => None,
            },
            range,
            new_prot: new_prot.map(prot_string),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Range {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Serialize)]
pub struct WriteFault {
    #[serde(flatten)]
    pub process: ProcessInfo,
    pub address: String,
    pub region: RegionJson,
    /// "user": the process's own instruction wrote; "kernel": the kernel wrote for it
    /// (read(), recv(), copy_to_user).
    pub access: &'static str,
    /// Null when the fault hook cannot see it (the perf-event hook).
    pub error_code: Option<u64>,
    /// User frames (`Frame`s), innermost first, rendered once per distinct stack
    /// (`rendered_stacks.rs`).
    pub stack: Arc<RawValue>,
    /// True when the stack is not whole: `stack_end` is not "complete", or it was cut
    /// to `--max-stack-depth`.
    pub stack_truncated: bool,
    /// Why the walk stopped (`unwind::STACK_END_*` by name).
    pub stack_end: &'static str,
    /// `access: "kernel"` only: the kernel's frames, innermost first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_stack: Option<Vec<Frame>>,
    /// Aggregated mode: how many faults this event stands for. `address`, `tid` and
    /// `ts`... are those of the first (`ts`: the last).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<AggregateSummary>,
    /// `--rearm-interval`: the re-arm round the (first) fault happened in; 0 before
    /// the first round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round: Option<u64>,
}

/// `watch_started`: a watch is set on every thread of the process.
#[derive(Debug, Serialize)]
pub struct WatchStarted {
    pub pid: u32,
    /// The watch's number (its place on the command line), as `write_watch` gives it.
    pub watch: u32,
    pub address: String,
    /// Bytes watched: 1, 2, 4 or 8.
    pub length: u8,
    /// The symbol it was given as, and the file defining it; null for an address.
    pub symbol: Option<String>,
    pub module: Option<String>,
    /// Threads the watchpoint was set on at start (later ones inherit it).
    pub threads: usize,
}

/// `write_watch`: writes to a watched address by one thread from one stack.
#[derive(Debug, Serialize)]
pub struct WriteWatch {
    #[serde(flatten)]
    pub process: ProcessInfo,
    pub watch: u32,
    pub address: String,
    pub symbol: Option<String>,
    /// The watched bytes after the (last) write, as a little-endian number in hex;
    /// null when they could not be read.
    pub value: Option<String>,
    /// The writer's frames, innermost first: the first is the instruction after the
    /// write (where the CPU reports it).
    pub stack: Arc<RawValue>,
    pub stack_truncated: bool,
    pub stack_end: &'static str,
    /// Aggregated mode: how many writes this event stands for.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<WatchSummary>,
}

/// The writes a `write_watch` stands for (default mode).
#[derive(Debug, Serialize)]
pub struct WatchSummary {
    pub count: u64,
    pub first_ts: String,
    pub last_ts: String,
}

/// The aggregate a `write_fault` stands for (default mode).
#[derive(Debug, Serialize)]
pub struct AggregateSummary {
    /// Faults merged: same process, region, user and kernel stacks.
    pub count: u64,
    /// Distinct pages written.
    pub pages: u64,
    pub first_ts: String,
    pub last_ts: String,
}

/// One stack frame; unknown parts are null, never invented.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    pub addr: String,
    /// Shared with the symboliser's cache: a frame costs no string copies.
    pub symbol: Option<Arc<str>>,
    /// Offset of `addr` into `symbol`.
    pub offset: Option<u64>,
    /// Path of the ELF file.
    pub module: Option<Arc<str>>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
    /// True for a function inlined into the next frame.
    pub inlined: bool,
    /// A frame with no symbol but a module: `addr` as an offset into the module's file,
    /// what `addr2line -e MODULE` takes (and `report` prints as `module+offset`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_offset: Option<String>,
    /// A user frame without a name: why ("no_module": JIT or anonymous code;
    /// "no_symbols": the module has none there, e.g. stripped without a debug file;
    /// "module_unreadable": the file could not be read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol_missing: Option<&'static str>,
}

/// `agent_stats` (periodic) and `agent_stopped` (final totals).
#[derive(Debug, Serialize)]
pub struct Stats {
    #[serde(skip)]
    pub final_totals: bool,
    pub counters: Counters,
    /// `agent_stopped` when the agent ran a command: how it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_exit_code: Option<i32>,
}

/// Lowercase hex for addresses.
pub fn hex(value: u64) -> String {
    format!("{value:#x}")
}

/// Every counter, for `agent_stats` and `agent_stopped`: for every kind, produced =
/// delivered + lost can be checked.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Counters {
    pub kernel: KernelCounters,
    pub agent: AgentCounters,
    /// Entries in the kernel's tables when the event was written.
    pub table_entries: TableEntries,
}
