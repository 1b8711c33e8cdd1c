//! The JSON events the agent prints, schema `map-audit/v1` (see
//! `schema/map-audit-v1.schema.json`). Fields are only ever added, never renamed.
//! Addresses are lowercase hex strings: JSON numbers above 2^53 lose precision in most
//! collectors.

use serde::Serialize;

use crate::{loader::AttachedHook, stats::Counters};

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
    Stats(Stats),
}

impl Body {
    /// The `event` name of this body.
    pub fn name(&self) -> &'static str {
        match self {
            Body::AgentStarted(_) => "agent_started",
            Body::Region(r) if r.range.is_some() => "region_unmapped",
            Body::Region(_) => "region_mapped",
            Body::WriteFault(_) => "write_fault",
            Body::Stats(s) if s.final_totals => "agent_stopped",
            Body::Stats(_) => "agent_stats",
        }
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

#[derive(Debug, Clone, Serialize)]
pub struct RegionJson {
    /// Stable for the region's life; pieces left by a partial unmap keep it.
    pub id: u64,
    pub start: String,
    /// Exclusive.
    pub end: String,
    /// "rw-", "rwx", ...
    pub prot: String,
    /// "shared" or "private", then "anonymous", "fixed", ... as given to mmap.
    pub flags: Vec<&'static str>,
    /// Backing file; null for anonymous memory or when it could not be resolved.
    pub path: Option<String>,
    /// Offset into the file in bytes.
    pub offset: u64,
}

#[derive(Debug, Serialize)]
pub struct RegionEvent {
    #[serde(flatten)]
    pub process: ProcessInfo,
    pub region: RegionJson,
    /// `region_unmapped` only: the part that left the table (all of it unless trimmed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<Range>,
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
    /// "user": the process's own instruction wrote.
    pub access: &'static str,
    pub error_code: u64,
    /// User frames, innermost first.
    pub stack: Vec<Frame>,
    /// True when the stack filled the capture buffer and outer frames were cut.
    pub stack_truncated: bool,
}

/// One stack frame; unknown parts are null, never invented.
#[derive(Debug, Clone, Serialize)]
pub struct Frame {
    pub addr: String,
    pub symbol: Option<String>,
    /// Offset of `addr` into `symbol`.
    pub offset: Option<u64>,
    /// Path of the ELF file.
    pub module: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    /// True for a function inlined into the next frame.
    pub inlined: bool,
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
