//! Go mode's JSON events (schema `map-audit/v1`, same envelope as every event):
//! `go_maps_started`, `go_program_hooked` / `go_program_refused` (`--all-go`),
//! `go_map_concurrent_write`, `go_runtime_crash` (and, with `--crash-only`, a
//! `go_crash_thread` per thread), `go_maps_stats` and `go_maps_stopped`.

use schemars::JsonSchema;
use serde::{Serialize, Serializer};

use super::{
    counters::GoCounters,
    hooks::{Hook, Mode, Operation},
};
use crate::output::{
    events::{Body, Frame, OtherEvent, hex},
    schema::{Address, Timestamp},
};

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum GoEvent {
    Started(Started),
    ProgramHooked(ProgramHooked),
    ProgramRefused(ProgramRefused),
    ConcurrentWrite(ConcurrentWrite),
    Crash(RuntimeCrash),
    CrashThread(CrashThread),
    Stats(Stats),
}

impl GoEvent {
    pub fn name(&self) -> &'static str {
        match self {
            GoEvent::Started(_) => "go_maps_started",
            GoEvent::ProgramHooked(_) => "go_program_hooked",
            GoEvent::ProgramRefused(_) => "go_program_refused",
            GoEvent::ConcurrentWrite(_) => "go_map_concurrent_write",
            GoEvent::Crash(_) => "go_runtime_crash",
            GoEvent::CrashThread(_) => "go_crash_thread",
            GoEvent::Stats(s) if s.final_totals => "go_maps_stopped",
            GoEvent::Stats(_) => "go_maps_stats",
        }
    }
}

impl From<GoEvent> for Body {
    fn from(event: GoEvent) -> Self {
        Body::Other(OtherEvent::new(event.name(), &event))
    }
}

pub fn hex_serde<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex(*value))
}

/// The audited program, as its build info tells.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(rename = "GoProgram")]
pub struct Program {
    #[schemars(range(min = 1))]
    pub pid: u32,
    /// The executable's path as the agent opened it.
    pub exe: String,
    #[schemars(regex(pattern = "^go"))]
    pub go_version: String,
    pub build_id: Option<String>,
    /// `GOEXPERIMENT` of the build; empty when it used the release's defaults.
    pub experiments: Vec<String>,
    /// Names came from `.gopclntab` alone (no symbol table).
    pub stripped: bool,
}

/// A program and the hooks attached to it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HookedProgram {
    #[serde(flatten)]
    pub program: Program,
    pub goid_offset: u32,
    pub goid_offset_source: GoidOffsetSource,
    #[schemars(length(min = 1))]
    pub hooks: Vec<Hook>,
    #[schemars(range(min = 1))]
    pub uprobes: usize,
}

/// `go_maps_started`: the program and the hooks attached to it; with `--all-go`, none
/// (each program found gets a `go_program_hooked` or `go_program_refused`).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "GoMapsStarted")]
pub struct Started {
    pub version: &'static str,
    pub kernel_release: String,
    #[serde(flatten)]
    pub program: Option<HookedProgram>,
    /// `--all-go`: every Go program on the host, running or started later.
    pub all_go: bool,
    /// The spawned command, if any.
    pub command: Option<Vec<String>>,
    /// `exact` (every map write hooked) or `crash_only` (the fatal paths alone).
    pub mode: Mode,
    #[schemars(range(min = 1))]
    pub ttl_ms: u64,
    /// What the mode costs the program: in `exact` mode two uprobe hits per map
    /// write (a diagnostic, not an always-on audit); in `crash_only` nothing until it
    /// crashes.
    pub cost_note: &'static str,
}

/// How `--all-go` found a program.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Found {
    /// Running when the agent started.
    Running,
    /// Exec'd since.
    Exec,
}

/// `go_program_hooked` (`--all-go`): a Go program's crash hooks are on; every process
/// running it, now or later, is covered. `pid` is the process it was found in.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "GoProgramHooked")]
pub struct ProgramHooked {
    #[serde(flatten)]
    pub hooked: HookedProgram,
    pub found: Found,
}

/// `go_program_refused` (`--all-go`): a Go program the agent could not hook, and why;
/// its crashes go unseen (counted in `programs_refused`).
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "GoProgramRefused")]
pub struct ProgramRefused {
    #[schemars(range(min = 1))]
    pub pid: u32,
    pub exe: String,
    pub found: Found,
    pub reason: String,
}

/// Where the goroutine id's offset in the runtime's `g` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum GoidOffsetSource {
    /// The binary's DWARF.
    Dwarf,
    /// The agent's table of Go releases (stripped binaries).
    Table,
    /// A stripped binary of a release newer than any the agent checked: the newest
    /// checked release's offset, a guess (the hooks still check their functions exist).
    NearestRelease,
}

/// One goroutine's side of a race.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[schemars(rename = "GoWriter")]
pub struct Writer {
    pub goid: u64,
    #[schemars(range(min = 1))]
    pub tid: u32,
    /// Null only if the record named no hook this agent attached.
    pub operation: Option<Operation>,
    /// The runtime function it was in, e.g. "runtime.mapassign_faststr".
    pub function: Option<String>,
    /// When it entered the write.
    #[schemars(with = "Timestamp")]
    pub entered_ts: String,
    /// The runtime function first, then its caller (the Go code that wrote).
    pub stack: Vec<Frame>,
    pub stack_truncated: bool,
}

/// `go_map_concurrent_write`: `writers[1]` entered a write to `map` while `writers[0]`
/// had not returned from its own.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "GoMapConcurrentWrite")]
pub struct ConcurrentWrite {
    #[schemars(range(min = 1))]
    pub pid: u32,
    pub comm: String,
    pub go_version: String,
    #[serde(serialize_with = "hex_serde")]
    #[schemars(with = "Address")]
    pub map: u64,
    pub writers: [Writer; 2],
    /// How long the first writer had been in its write.
    pub overlap_ns: u64,
}

/// The map write a crashing goroutine was in.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "GoOpenWrite")]
pub struct OpenWrite {
    #[serde(serialize_with = "hex_serde")]
    #[schemars(with = "Address")]
    pub map: u64,
    pub function: Option<String>,
    pub operation: Option<Operation>,
}

/// `go_runtime_crash`: a goroutine reached `runtime.fatal`/`throw`, panicked inside
/// a map write, or (`--crash-only`) panicked with no one recovering.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "GoRuntimeCrash")]
pub struct RuntimeCrash {
    #[schemars(range(min = 1))]
    pub pid: u32,
    #[schemars(range(min = 1))]
    pub tid: u32,
    pub comm: String,
    pub goid: u64,
    pub kind: CrashKind,
    /// The fatal error's text (at most 64 bytes), e.g. "concurrent map writes".
    pub message: Option<String>,
    pub in_map_write: Option<OpenWrite>,
    pub stack: Vec<Frame>,
    pub stack_truncated: bool,
    /// `--crash-only`: how many `go_crash_thread` events follow, one per thread of the
    /// process read while the agent held it stopped at the crash (one line each keeps
    /// lines under 16 KiB whatever the number of threads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads_captured: Option<u32>,
    /// `--crash-only`: why the other threads could not be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threads_error: Option<String>,
}

/// `go_crash_thread`: one thread of a crashed process, as the agent found it stopped.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "GoCrashThread")]
pub struct CrashThread {
    #[schemars(range(min = 1))]
    pub pid: u32,
    /// The `tid` of the `go_runtime_crash` whose capture this thread belongs to.
    #[schemars(range(min = 1))]
    pub crash_tid: u32,
    #[schemars(range(min = 1))]
    pub tid: u32,
    /// The goroutine it ran; 0 on the thread's system stack (the scheduler, `g0`);
    /// null when neither R14 nor the thread's TLS held a `g` owning its stack.
    pub goid: Option<u64>,
    /// The thread that reached the fatal path.
    pub crashing: bool,
    /// The innermost frame in the map runtime (`runtime.map*`,
    /// `internal/runtime/maps.*`), when the thread is inside a map operation: with the
    /// crashing thread on a map, the other goroutine touching it.
    pub map_function: Option<String>,
    /// From the thread's pc outwards, unwound with `.gopclntab`'s frame sizes.
    pub stack: Vec<Frame>,
    pub stack_truncated: bool,
}

/// How a goroutine crashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CrashKind {
    /// `runtime.fatal` or `runtime.throw`: the process ends.
    Fatal,
    /// A panic inside a map write.
    Panic,
    /// A panic no one recovered (`runtime.fatalpanic`, `--crash-only`): the process
    /// ends; `message` is the panic's value when it is a string or an error.
    UnrecoveredPanic,
}

/// Races not reported again within one interval, per map and pair of call sites.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
#[schemars(rename = "GoSuppressed")]
pub struct Suppressed {
    #[serde(serialize_with = "hex_serde")]
    #[schemars(with = "Address")]
    pub map: u64,
    /// The two writers' callers ("main.f+0x4b"), sorted.
    pub call_sites: [String; 2],
    #[schemars(range(min = 1))]
    pub count: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "GoMapsStats")]
pub struct Stats {
    #[serde(skip)]
    pub final_totals: bool,
    pub counters: GoCounters,
    pub suppressed: Vec<Suppressed>,
    /// `go_maps_stopped` when the agent ran a command: how it ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command_exit_code: Option<i32>,
}
