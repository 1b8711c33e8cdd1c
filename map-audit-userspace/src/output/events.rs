//! The JSON events the agent prints, schema `map-audit/v1`. The types are the schema:
//! `schema/map-audit-v1.schema.json` is generated from them (`output::schema`), and
//! their doc comments are its descriptions. Fields are only ever added, never renamed.
//! Addresses are lowercase hex strings: JSON numbers above 2^53 lose precision in most
//! collectors.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;
use serde_json::value::RawValue;

pub use map_audit_common::counters::{AgentCounters, KernelCounters};

use crate::{
    kernel::{feature_probes::ProgramObject, programs::AttachedHook, region_table::TableEntries},
    output::containers::{Container, Kubernetes},
    output::region_names::{RegionJson, prot_string},
    output::schema::{Address, Prot, Timestamp},
    proc::cgroup_paths::CgroupInfo,
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
    RegionMapped(RegionEvent<Mapped>),
    RegionUnmapped(RegionEvent<Unmapped>),
    RegionProtected(RegionEvent<Protected>),
    WriteFault(WriteFault),
    WatchStarted(WatchStarted),
    WriteWatch(WriteWatch),
    RegionSynced(RegionSynced),
    RegionUnsynced(RegionUnsynced),
    Stats(Stats),
    /// An event kind a subcommand defines (Go mode's), in JSON form.
    Other(OtherEvent),
}

impl Body {
    /// `region_mapped`, `region_unmapped` or `region_protected`.
    pub fn is_region_event(&self) -> bool {
        matches!(
            self,
            Body::RegionMapped(_) | Body::RegionUnmapped(_) | Body::RegionProtected(_)
        )
    }

    /// The `event` name of this body.
    pub fn name(&self) -> &'static str {
        match self {
            Body::AgentStarted(_) => "agent_started",
            Body::RegionMapped(_) => "region_mapped",
            Body::RegionUnmapped(_) => "region_unmapped",
            Body::RegionProtected(_) => "region_protected",
            Body::WriteFault(_) => "write_fault",
            Body::WatchStarted(_) => "watch_started",
            Body::WriteWatch(_) => "write_watch",
            Body::RegionSynced(_) => "region_synced",
            Body::RegionUnsynced(_) => "region_unsynced",
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

/// `agent_started`: the first line of `run` and `watch`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AgentStarted {
    pub version: &'static str,
    pub kernel_release: String,
    pub programs: Programs,
    /// The hooks attached, and why each was chosen.
    #[schemars(length(min = 1))]
    pub hooks: Vec<AttachedHook>,
    pub scope: Scope,
}

/// Which embedded eBPF object runs (chosen by probing the kernel), and what runs
/// differently with it than with the 5.17+ object (empty for that one).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Programs {
    pub object: ProgramObject,
    /// Frames a user stack keeps at most (`--max-stack-depth` can only lower it).
    pub max_stack_depth: usize,
    pub degraded: Vec<&'static str>,
}

/// What the agent audits: processes by pid or name, and the command it ran.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Scope {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    /// The spawned command, if any.
    pub command: Option<Vec<String>>,
}

/// Who did it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
pub struct ProcessInfo {
    #[schemars(range(min = 1))]
    pub pid: u32,
    #[schemars(range(min = 1))]
    pub tid: u32,
    #[schemars(length(max = 64))]
    pub comm: String,
    /// `/proc/PID/exe`, null when the process was gone before the agent looked.
    pub exe: Option<String>,
    /// The thread's cgroup (v2) when the kernel made the record; null for records the
    /// agent makes itself before the process's first.
    pub cgroup: Option<Arc<CgroupInfo>>,
    /// The container the process runs in, read from its cgroup path; null on the host.
    pub container: Option<Container>,
    /// The Kubernetes pod it runs in, read from its cgroup path; null outside one.
    pub kubernetes: Option<Kubernetes>,
}

/// `region_mapped`, `region_unmapped` and `region_protected`: the process, the region
/// (for an unmap or mprotect: as it was before) and what changed.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Region{Change}")]
pub struct RegionEvent<Change> {
    #[serde(flatten)]
    pub process: ProcessInfo,
    pub region: RegionJson,
    #[serde(flatten)]
    pub change: Change,
}

/// `region_mapped`: where the region came from.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Mapped {
    pub origin: Origin,
}

/// How a region came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// mmap.
    Mmap,
    /// mremap: moved or resized.
    Mremap,
    /// Inherited from the parent at fork.
    Fork,
    /// There before the agent started, read from /proc/PID/maps.
    Proc,
    /// The heap, made or grown by brk: same id as it grows.
    Brk,
    /// Mapped by the kernel at exec: the program's and its interpreter's segments, the
    /// stack.
    Exec,
}

/// `region_unmapped`: the part of the region unmapped.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Unmapped {
    pub range: Range,
}

/// `region_protected`: the part of the region changed, and its new protection.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Protected {
    pub range: Range,
    #[schemars(with = "Prot")]
    pub new_prot: String,
}

/// A region change, for `region_event`.
pub enum RegionChange {
    Mapped(Origin),
    /// The range unmapped.
    Unmapped(Range),
    /// The range changed, and its new `PROT_*` bits.
    Protected(Range, u32),
}

impl RegionChange {
    /// The event of this change to `region` by `process`.
    pub fn event(self, process: ProcessInfo, region: RegionJson) -> Body {
        match self {
            RegionChange::Mapped(origin) => Body::RegionMapped(RegionEvent {
                process,
                region,
                change: Mapped { origin },
            }),
            RegionChange::Unmapped(range) => Body::RegionUnmapped(RegionEvent {
                process,
                region,
                change: Unmapped { range },
            }),
            RegionChange::Protected(range, prot) => Body::RegionProtected(RegionEvent {
                process,
                region,
                change: Protected {
                    range,
                    new_prot: prot_string(prot),
                },
            }),
        }
    }
}

/// A part of a region, `end` exclusive.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Range {
    #[schemars(with = "Address")]
    pub start: String,
    #[schemars(with = "Address")]
    pub end: String,
}

/// `write_fault`: a write into a tracked region (every-event mode: one fault;
/// default: the faults of one process, region and stack in one flush interval).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(extend("dependentRequired" = { "count": ["pages", "first_ts", "last_ts"] }))]
pub struct WriteFault {
    #[serde(flatten)]
    pub process: ProcessInfo,
    #[schemars(with = "Address")]
    pub address: String,
    pub region: RegionJson,
    pub access: Access,
    /// The architecture's fault error code (x86: 0x2 write, 0x4 user); null when the
    /// fault hook cannot see it (perf-event).
    pub error_code: Option<u64>,
    /// User frames, innermost first.
    // Rendered once per distinct stack (`rendered_stacks.rs`).
    #[schemars(with = "UserStack")]
    pub stack: Arc<RawValue>,
    /// True whenever the walk stopped before the stack's outermost frame (`stack_end`
    /// is not `complete`), or the stack was cut to `--max-stack-depth`.
    pub stack_truncated: bool,
    pub stack_end: StackEnd,
    /// `access: kernel` only: the kernel's frames, innermost first.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
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

/// User frames, innermost first (the schema of a rendered `stack`).
#[derive(JsonSchema)]
#[expect(dead_code, reason = "only its schema is used")]
#[schemars(transparent)]
struct UserStack(#[schemars(length(max = 512))] Vec<Frame>);

/// Who wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// The process's own instruction wrote.
    User,
    /// The kernel wrote for it (read(), recv(), copy_to_user).
    Kernel,
}

/// Why the user stack walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StackEnd {
    /// It reached the outermost frame.
    Complete,
    /// It took 64 frames with more left.
    DepthLimit,
    /// A frame's code has no unwind table (a file without CFI, or its table not built
    /// yet or full).
    NoUnwindInfo,
    /// The stack memory could not be read.
    UnreadableStack,
    /// A frame's code is not in a file (JIT).
    JitOrAnonymousCode,
}

impl StackEnd {
    /// The name of the kernel's `unwind::STACK_END_*`.
    pub fn from_kernel(end: u32) -> Self {
        use map_audit_common::unwind::*;
        match end {
            STACK_END_COMPLETE => StackEnd::Complete,
            STACK_END_DEPTH_LIMIT => StackEnd::DepthLimit,
            STACK_END_UNREADABLE => StackEnd::UnreadableStack,
            STACK_END_ANONYMOUS_CODE => StackEnd::JitOrAnonymousCode,
            _ => StackEnd::NoUnwindInfo,
        }
    }
}

/// `watch_started`: a watch is set on every thread of the process.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WatchStarted {
    #[schemars(range(min = 1))]
    pub pid: u32,
    /// The watch's number (its place on the command line), as `write_watch` gives it.
    #[schemars(range(max = 3))]
    pub watch: u32,
    #[schemars(with = "Address")]
    pub address: String,
    /// Bytes watched: 1, 2, 4 or 8.
    #[schemars(extend("enum" = [1, 2, 4, 8]))]
    pub length: u8,
    /// The symbol it was given as, and the file defining it; null for an address.
    pub symbol: Option<String>,
    pub module: Option<String>,
    /// Threads the watchpoint was set on at start (later ones inherit it).
    #[schemars(range(min = 1))]
    pub threads: usize,
}

/// `write_watch`: writes to a watched address by one thread from one stack.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(extend("dependentRequired" = { "count": ["first_ts", "last_ts"] }))]
pub struct WriteWatch {
    #[serde(flatten)]
    pub process: ProcessInfo,
    #[schemars(range(max = 3))]
    pub watch: u32,
    #[schemars(with = "Address")]
    pub address: String,
    pub symbol: Option<String>,
    /// The watched bytes after the (last) write, as a little-endian number in hex;
    /// null when they could not be read.
    #[schemars(with = "Option<Address>")]
    pub value: Option<String>,
    /// The writer's frames, innermost first: the first is the instruction after the
    /// write (where the CPU reports it).
    #[schemars(with = "UserStack")]
    pub stack: Arc<RawValue>,
    pub stack_truncated: bool,
    pub stack_end: StackEnd,
    /// Aggregated mode: how many writes this event stands for.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<CountSummary>,
}

/// The writes a `write_watch`, or the calls a `region_synced`, stands for (default
/// mode).
#[derive(Debug, Serialize, JsonSchema)]
pub struct CountSummary {
    #[schemars(range(min = 1))]
    pub count: u64,
    #[schemars(with = "Timestamp")]
    pub first_ts: String,
    #[schemars(with = "Timestamp")]
    pub last_ts: String,
}

/// The aggregate a `write_fault` stands for (default mode).
#[derive(Debug, Serialize, JsonSchema)]
pub struct AggregateSummary {
    /// Faults merged: same process, region, user and kernel stacks.
    #[schemars(range(min = 1))]
    pub count: u64,
    /// Distinct pages written.
    #[schemars(range(min = 1))]
    pub pages: u64,
    #[schemars(with = "Timestamp")]
    pub first_ts: String,
    #[schemars(with = "Timestamp")]
    pub last_ts: String,
}

/// `region_synced`: an msync of a tracked region (default: the calls of one process,
/// region, stack, flags and result in one flush interval).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(extend("dependentRequired" = { "count": ["first_ts", "last_ts"] }))]
pub struct RegionSynced {
    #[serde(flatten)]
    pub process: ProcessInfo,
    /// The region holding the range's first page.
    pub region: RegionJson,
    /// The range asked for (aggregated: the first call's).
    pub range: Range,
    /// msync's flags.
    pub flags: Vec<SyncFlag>,
    pub result: SyncResult,
    /// From the call's entry to its return (for `sync`: the flush); aggregated, the
    /// total of the calls.
    pub duration_ns: u64,
    /// Shared file mappings: pages of the range that took a write fault (first write,
    /// or again after a writeback or a re-arm round) since the previous msync of them;
    /// aggregated, the total. Null for regions msync does not write back (anonymous or
    /// private).
    pub pages_written_since_last_sync: Option<u64>,
    /// The caller's frames, innermost first: the first is in the msync wrapper.
    #[schemars(with = "UserStack")]
    pub stack: Arc<RawValue>,
    pub stack_truncated: bool,
    pub stack_end: StackEnd,
    /// Aggregated mode: how many calls this event stands for.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<CountSummary>,
}

/// An msync flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyncFlag {
    /// MS_SYNC: the call waits for the write-back.
    Sync,
    /// MS_ASYNC: the call only schedules it.
    Async,
    /// MS_INVALIDATE.
    Invalidate,
    /// Bits msync does not know (it fails with EINVAL).
    Unknown,
}

/// How an msync ended: 0, or the errno's name ("EINVAL", "ENOMEM", "EBUSY", "EIO").
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum SyncResult {
    Done(#[schemars(range(min = 0, max = 0))] u8),
    Failed(#[schemars(regex(pattern = "^E[A-Z0-9]+$"))] String),
}

/// `region_unsynced` (`--unsynced-after`): pages of a shared file mapping the process
/// wrote and did not msync.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RegionUnsynced {
    /// The process, and the thread that wrote the oldest of the pages.
    #[serde(flatten)]
    pub process: ProcessInfo,
    pub region: RegionJson,
    pub reason: UnsyncedReason,
    /// Pages written since their last msync.
    #[schemars(range(min = 1))]
    pub pages: u64,
    /// When the oldest of them was written.
    #[schemars(with = "Timestamp")]
    pub since_ts: String,
}

/// Why a `region_unsynced` was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnsyncedReason {
    /// The pages were unmapped.
    Unmapped,
    /// The process ended (or exec'd) with them mapped.
    Exited,
    /// They stayed unsynced longer than `--unsynced-after` (reported once until the
    /// next msync of them).
    Unflushed,
}

/// One stack frame; unknown parts are null, never invented.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Frame {
    #[schemars(with = "Address")]
    pub addr: String,
    /// The function; null when unknown (`symbol_missing` says why).
    // Shared with the symboliser's cache: a frame costs no string copies.
    pub symbol: Option<Arc<str>>,
    /// Offset of `addr` into `symbol`.
    pub offset: Option<u64>,
    /// Path of the ELF file.
    pub module: Option<Arc<str>>,
    /// Source file and line, from the module's (or its debug file's) DWARF.
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
    /// True for a function inlined into the next frame.
    pub inlined: bool,
    /// A frame with no symbol but a module: `addr` as an offset into the module's file
    /// (`report` prints it as `module+offset`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Address")]
    pub module_offset: Option<String>,
    /// The same frame as an address of the module's ELF (its loadable segments' virtual
    /// addresses): what `addr2line -e MODULE` and `llvm-symbolizer` take, and what
    /// a debug file of the module is addressed by.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Address")]
    pub module_address: Option<String>,
    /// The module's GNU build id (hex): finds its debug file later, on this host or
    /// from debuginfod (`report --resymbolize`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub module_build_id: Option<String>,
    /// A user frame without a name: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub symbol_missing: Option<SymbolMissing>,
}

impl Frame {
    /// A frame at `addr` with nothing known about it yet: callers fill what they know
    /// (`Frame { symbol, ..Frame::at(addr) }`).
    pub fn at(addr: String) -> Self {
        Self {
            addr,
            symbol: None,
            offset: None,
            module: None,
            file: None,
            line: None,
            inlined: false,
            module_offset: None,
            module_address: None,
            module_build_id: None,
            symbol_missing: None,
        }
    }
}

/// Why a user frame has no name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SymbolMissing {
    /// JIT or anonymous code.
    NoModule,
    /// The module has none there (stripped, and no debug file found).
    NoSymbols,
    /// The module's file could not be read.
    ModuleUnreadable,
    /// The module has none there, and its debug file was still being fetched from a
    /// debuginfod server when the event went out.
    DebuginfoPending,
}

/// `agent_stats` (periodic) and `agent_stopped` (final totals).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Stats {
    #[serde(skip)]
    pub final_totals: bool,
    pub counters: Counters,
    /// `agent_stopped` when the agent ran a command: how it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_exit_code: Option<i32>,
}

/// Lowercase hex for addresses (`schema::Address`).
pub fn hex(value: u64) -> String {
    format!("{value:#x}")
}

/// Every counter, for `agent_stats` and `agent_stopped`: for every kind, produced =
/// delivered + lost can be checked.
#[derive(Debug, Default, Clone, Copy, Serialize, JsonSchema)]
pub struct Counters {
    pub kernel: KernelCounters,
    pub agent: AgentCounters,
    /// Entries in the kernel's tables when the event was written.
    pub table_entries: TableEntries,
}
