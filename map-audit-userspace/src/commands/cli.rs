//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::kernel::fault_hooks::FaultHook;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Json,
    Pretty,
}

#[derive(Debug, Parser)]
#[command(
    args_override_self = true,
    arg_required_else_help = true,
    name = "map-audit",
    version,
    about = "Audit writes into memory mappings with eBPF; JSON lines out.",
    after_help = "Start here: `sudo map-audit check` (what this kernel offers), then \
                  `sudo map-audit run -- ./your-program` (who writes where, with stacks).\n\
                  Each command's --help has an example."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Audit processes and print events as JSON lines.
    #[command(
        after_help = "Example: sudo map-audit run --shared-only -o writes.jsonl -- ./server --port 8080"
    )]
    Run(Box<RunArgs>),
    /// Show which hooks this kernel offers and which ones the agent would use.
    #[command(after_help = "Example: sudo map-audit check")]
    Check,
    /// Go mode: report goroutines that write one Go map at once, with both stacks,
    /// in one running Go program. A diagnostic: each map write costs two uprobe hits.
    #[command(after_help = "Example: sudo map-audit go-maps --pid $(pidof my-go-service)")]
    GoMaps(GoMapsArgs),
    /// Report every write to up to 4 variables or addresses (hardware watchpoints),
    /// with the writer's stack: for one hot field, where `run` sees only first writes.
    #[command(
        after_help = "Example: sudo map-audit watch --pid $(pidof server) --symbol request_count"
    )]
    Watch(Box<WatchArgs>),
    /// Summarise a map-audit JSON stream: top writers by process, region and stack, or
    /// a flame graph of write stacks.
    #[command(
        after_help = "Example: map-audit report writes.jsonl --flamegraph writes.svg --table"
    )]
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The stream to read (JSON lines as `run` prints them); `-` or nothing: stdin.
    #[arg(value_name = "FILE|-")]
    pub input: Option<String>,

    /// Write an SVG flame graph of the write stacks, widths by write count.
    #[arg(long, value_name = "OUT.svg")]
    pub flamegraph: Option<PathBuf>,

    /// Write collapsed stacks ("root;...;leaf COUNT" lines) for other flame-graph tools.
    #[arg(long, value_name = "OUT.folded")]
    pub folded: Option<PathBuf>,

    /// Root the flame graph's stacks at their process, region, container or pod.
    #[arg(long, value_enum, default_value = "none")]
    pub group_by: crate::commands::report::write_stream::GroupBy,

    /// Rows per table.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub top: usize,

    /// Print the tables too when writing a flame graph or folded stacks.
    #[arg(long)]
    pub table: bool,

    /// Name frames the stream recorded unnamed, by their module's build id: debug
    /// files under /usr/lib/debug/.build-id/, in the debuginfod cache, or fetched
    /// from the servers of --debuginfod (else DEBUGINFOD_URLS).
    #[arg(long)]
    pub resymbolize: bool,

    #[command(flatten)]
    pub debuginfod: DebuginfodArgs,
}

#[derive(Debug, Args)]
pub struct GoMapsArgs {
    /// Audit this running Go process.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Stop after this many seconds (default: when the process ends, or on a signal).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub duration: Option<std::time::Duration>,

    /// A write still open after this many milliseconds is taken as a missed return and
    /// never reported as a race.
    #[arg(long = "ttl-ms", value_name = "MS", default_value = "1000", value_parser = parse_millis)]
    pub ttl: std::time::Duration,

    /// Seconds between `go_maps_stats` events, which also list the races not printed
    /// again in that interval (one report per map and pair of call sites).
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub stats_interval: std::time::Duration,

    /// Write events to this file (appended, created 0600) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// json (default) or pretty (one readable line per event).
    #[arg(long, value_enum, default_value = "json")]
    pub format: OutputFormat,

    /// Ring buffer size in bytes: a power of two of at least 4096.
    #[arg(long, value_name = "BYTES", default_value_t = 4 * 1024 * 1024, value_parser = parse_ringbuf_size)]
    pub ringbuf_size: u32,

    /// Hook only the runtime's fatal paths (fatal, throw, fatalpanic): nothing per map
    /// write. On a crash the process is stopped, every thread's goroutine and stack is
    /// reported, and the process is let go to crash as it would have.
    #[arg(long)]
    pub crash_only: bool,

    /// Every Go program of the host, running now or started later (recognised by its
    /// `.go.buildinfo` at exec), in --crash-only mode (implied). Runs until a signal or
    /// --duration.
    #[arg(long, conflicts_with_all = ["pid", "command"])]
    pub all_go: bool,

    /// Run COMMAND (a Go program) and audit it until it exits; map-audit then exits
    /// with its status.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Watch this running process (every thread, and the threads it starts later).
    #[arg(long, value_name = "PID", required_unless_present = "command")]
    pub pid: Option<u32>,

    /// A data symbol of the program or a library it has loaded (`counter`,
    /// `main.counter` in Go); LEN (1, 2, 4 or 8 bytes) defaults to the symbol's size.
    #[arg(long = "symbol", value_name = "NAME[:LEN]")]
    pub symbols: Vec<String>,

    /// An address, e.g. 0x4c6f10:8 (LEN 1, 2, 4 or 8, default 8; aligned to LEN).
    #[arg(long = "address", value_name = "ADDR[:LEN]")]
    pub addresses: Vec<String>,

    /// Print every write as its own event instead of aggregating them by (watch,
    /// thread, stack) per --flush-interval.
    #[arg(long)]
    pub every_event: bool,

    /// Seconds between reports of aggregated writes.
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds)]
    pub flush_interval: std::time::Duration,

    /// At most this many write records per second per process (the rest are counted
    /// as `watch_hits_rate_limited`).
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub rate_limit: Option<u64>,

    /// How user stacks are walked (as for `run`).
    #[arg(long, value_enum, default_value = "auto")]
    pub unwind: UnwindMode,

    /// Frames per reported stack (at most 64).
    #[arg(long, value_name = "FRAMES", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_stack_depth: u16,

    /// Write events to this file (appended, created 0600) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// json (default) or pretty.
    #[arg(long, value_enum, default_value = "json")]
    pub format: OutputFormat,

    /// Seconds between `agent_stats` events (0: only at exit).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub stats_interval: u64,

    /// Run COMMAND and watch it until it exits (its executable's symbols: libraries
    /// load after the watchpoints are set, so watch their variables by --pid).
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Read options from this TOML file (keys are the long option names, with `_` or
    /// `-`); options given here override it (list options add to it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// json (default: one JSON object per line, for machines) or pretty (one readable
    /// line per event, for a terminal).
    #[arg(long, value_enum, default_value = "json")]
    pub format: OutputFormat,

    /// Serve Prometheus metrics (the agent's health) at http://HOST:PORT/metrics.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,

    /// Audit this process and the children it forks from now on (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Audit processes with this command name (repeatable; at most 15 bytes, as the
    /// kernel keeps it). A process joins at its next mmap.
    #[arg(long = "comm", value_name = "NAME", value_parser = parse_comm)]
    pub comms: Vec<String>,

    /// Audit every process (except the agent itself); each joins at its next mmap,
    /// and those running now are loaded from /proc.
    #[arg(long)]
    pub all: bool,

    /// Audit the processes of this cgroup v2 directory and its descendants, e.g.
    /// /sys/fs/cgroup/system.slice/nginx.service.
    #[arg(long, value_name = "PATH")]
    pub cgroup: Option<PathBuf>,

    /// Audit the processes of the containers whose id starts with ID (repeatable; at
    /// least 4 hex digits), those running now and those started later, as their cgroup
    /// names them: Docker, containerd, CRI-O, Podman; for systemd-nspawn the machine
    /// name. Needs cgroup v2.
    #[arg(long = "container", value_name = "ID", value_parser = parse_container_id)]
    pub containers: Vec<String>,

    /// Audit the processes of a Kubernetes pod (repeatable): NAMESPACE/NAME, found by
    /// the labels kubelet puts on its containers through the runtimes' API (see
    /// --container-api), or the pod's UID; its containers running now and started
    /// later (restarts included), as the pod's cgroup holds them. Needs cgroup v2.
    #[arg(long = "pod", value_name = "NAMESPACE/NAME|UID", value_parser = crate::output::containers::PodRef::parse)]
    pub pods: Vec<crate::output::containers::PodRef>,

    /// Where a runtime serves its API, asked once per container for its name, image
    /// and pod labels (repeatable; replaces that runtime's default socket:
    /// docker=/var/run/docker.sock, podman=/run/podman/podman.sock,
    /// containerd=/run/containerd/containerd.sock).
    #[arg(long, value_name = "RUNTIME=SOCKET", value_parser = parse_container_api)]
    pub container_api: Vec<(crate::output::containers::Runtime, std::path::PathBuf)>,

    /// Ask no container runtime: names and images stay null.
    #[arg(long, conflicts_with = "container_api")]
    pub no_container_api: bool,

    /// Audit only regions that are writable and executable at once (JIT, shellcode).
    #[arg(long)]
    pub wx_only: bool,

    /// Audit only MAP_SHARED regions.
    #[arg(long, conflicts_with = "anon_only")]
    pub shared_only: bool,

    /// Audit only anonymous regions.
    #[arg(long)]
    pub anon_only: bool,

    /// Audit only regions of at least this many bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    pub min_size: u64,

    /// Audit only file-backed regions whose path matches this glob (e.g. '/dev/shm/*').
    #[arg(long, value_name = "GLOB", value_parser = parse_glob)]
    pub path: Option<glob::Pattern>,

    /// Print every write fault as its own event (forensics) instead of aggregating
    /// them by (process, region, stack).
    #[arg(long)]
    pub every_event: bool,

    /// Seconds between reports of aggregated write faults (they are also reported when
    /// their region is unmapped and when the process ends).
    #[arg(long, value_name = "SECONDS", default_value = "1", value_parser = parse_seconds)]
    pub flush_interval: std::time::Duration,

    /// Re-arm every audited process this often (seconds), so writes to memory it has
    /// already written fault again: each round clears the process's soft-dirty bits
    /// (`/proc/PID/clear_refs`), the aggregates of a round are reported when the next
    /// one starts (this replaces --flush-interval), and each `write_fault` says its
    /// `round`. Costs the process one extra fault per page it writes per round, and
    /// disturbs CRIU or any other soft-dirty user of the same process. Needs
    /// CONFIG_MEM_SOFT_DIRTY (`map-audit check`); not with --all.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds, conflicts_with_all = ["flush_interval", "all"])]
    pub rearm_interval: Option<std::time::Duration>,

    /// With --rearm-interval: a process whose last round took more than N re-armed
    /// faults per second skips the next round (counted as `rearm_skipped_over_budget`).
    #[arg(long, value_name = "N/s", value_parser = parse_rate, requires = "rearm_interval")]
    pub rearm_budget: Option<u64>,

    /// Warn (`region_unsynced`) when pages of a shared file mapping stay written and not
    /// msync'ed longer than this (seconds), and when they are unmapped (or their process
    /// ends) without an msync. The kernel's own writeback may still have saved them:
    /// this checks the program's durability intent. Off by default.
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    pub unsynced_after: Option<std::time::Duration>,

    /// At most this many fault records per second per process, e.g. 1000 or 1000/s
    /// (meant for --every-event; the rest are counted as `faults_rate_limited`).
    #[arg(long, value_name = "N/s", value_parser = parse_rate)]
    pub rate_limit: Option<u64>,

    /// Frames per reported stack (at most 64, what the kernel captures); deeper stacks
    /// are cut, marked `stack_truncated` and counted, so lines stay under 16 KiB.
    #[arg(long, value_name = "FRAMES", default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub max_stack_depth: u16,

    /// The fault hook: auto picks the cheapest that attaches (raw tracepoint, tp_btf,
    /// tracepoint, kprobe); naming one forces it, and the agent fails if it cannot
    /// attach.
    #[arg(long, value_enum, default_value = "auto")]
    pub fault_hook: FaultHook,

    /// Which embedded eBPF object runs: auto probes the kernel and takes the one for
    /// 5.17+ where it has all that one needs, else the one for 5.10 to 5.16 (see
    /// `map-audit check`); naming one forces it (linux5-10 runs on newer kernels too:
    /// how the two objects' events and costs are compared).
    #[arg(long, value_enum, default_value = "auto")]
    pub ebpf_object: EbpfObject,

    #[command(flatten)]
    pub debuginfod: DebuginfodArgs,

    /// How user stacks are walked: auto uses each file's unwind table (built from its
    /// DWARF CFI, .eh_frame) where there is one and frame pointers elsewhere; cfi stops
    /// a stack where there is no table; frame-pointer is the cheaper walk that is
    /// wrong in code built without frame pointers (most distribution packages).
    #[arg(long, value_enum, default_value = "auto")]
    pub unwind: UnwindMode,

    /// Rows of the kernel's unwind tables (8 bytes each: 16 MiB by default; libc
    /// takes ~28,000); files whose rows do not fit are counted (`unwind_table_full`).
    #[arg(long, value_name = "ROWS", default_value_t = 1 << 21, value_parser = clap::value_parser!(u32).range(1024..=(1 << 26)))]
    pub unwind_table_rows: u32,

    /// Print addresses as offsets into their region or mapped file, not as absolute
    /// addresses (which give away the ASLR layout in logs shared beyond the host).
    #[arg(long)]
    pub redact_addresses: bool,

    /// Write events to this file (appended, created 0600) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Ring buffer size in bytes: a power of two of at least 4096.
    #[arg(long, value_name = "BYTES", default_value_t = 16 * 1024 * 1024, value_parser = parse_ringbuf_size)]
    pub ringbuf_size: u32,

    /// Region table entries; a region takes one per aligned power-of-two block (about
    /// 2 x log2(pages) at most).
    #[arg(long, value_name = "ENTRIES", default_value_t = 262_144, value_parser = clap::value_parser!(u32).range(16..))]
    pub region_table_size: u32,

    /// Seconds between `agent_stats` events (0: only at exit).
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub stats_interval: u64,

    /// Print the eBPF programs' diagnostics (aya-log) to stderr; also on with RUST_LOG.
    #[arg(long)]
    pub kernel_log: bool,

    /// Run COMMAND and audit it and its children until it exits; map-audit then exits
    /// with its status.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `--ebpf-object`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EbpfObject {
    Auto,
    Linux5_17,
    Linux5_10,
}

/// `--unwind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnwindMode {
    Auto,
    Cfi,
    FramePointer,
}

impl UnwindMode {
    /// The kernel's `AgentConfig::unwind_mode`.
    pub fn config_value(self) -> u32 {
        use map_audit_common::config::{UNWIND_AUTO, UNWIND_CFI, UNWIND_FRAME_POINTER};
        match self {
            Self::Auto => UNWIND_AUTO,
            Self::Cfi => UNWIND_CFI,
            Self::FramePointer => UNWIND_FRAME_POINTER,
        }
    }
}

/// Where frames of stripped binaries get names when this host has no debug file.
#[derive(clap::Args, Debug, Clone)]
pub struct DebuginfodArgs {
    /// A debuginfod server to ask, by build id, for the debug file of a module that has
    /// none on this host (repeatable; default: the servers of DEBUGINFOD_URLS). Asked
    /// once per module, in the background, when it is mapped; files are kept in
    /// `--debuginfod-cache`.
    #[arg(long = "debuginfod", value_name = "URL")]
    pub servers: Vec<String>,

    /// Ask no debuginfod server, whatever DEBUGINFOD_URLS says.
    #[arg(long, conflicts_with = "servers")]
    pub no_debuginfod: bool,

    /// How long an aggregate whose stack goes through a module whose debug file is
    /// still being fetched is held for it; then it is reported with those frames
    /// unnamed, and counted (`aggregates_sent_before_debug_file`).
    #[arg(long, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub debuginfod_wait: std::time::Duration,

    /// Per request: the time to connect and to read the whole file. A server that
    /// fails is not asked again for 5 s, doubling up to 5 min.
    #[arg(long, value_name = "SECONDS", default_value = "30", value_parser = parse_seconds)]
    pub debuginfod_timeout: std::time::Duration,

    /// Where fetched debug files are kept (default: DEBUGINFOD_CACHE_PATH, else
    /// /var/cache/map-audit/debuginfod), in the layout gdb and perf share.
    #[arg(long, value_name = "DIR")]
    pub debuginfod_cache: Option<std::path::PathBuf>,

    /// The cache's bound in MiB: past it the least recently used files are removed.
    #[arg(long, value_name = "MIB", default_value_t = 2048)]
    pub debuginfod_cache_mib: u64,
}

impl DebuginfodArgs {
    /// The servers to ask: `--debuginfod`, else DEBUGINFOD_URLS; none with
    /// `--no-debuginfod`.
    pub fn servers(&self) -> Vec<String> {
        match (&self.servers[..], self.no_debuginfod) {
            (_, true) => Vec::new(),
            ([], false) => crate::stacks::debuginfod::urls_from_env(),
            (servers, false) => servers.to_vec(),
        }
    }

    pub fn cache_dir(&self) -> std::path::PathBuf {
        self.debuginfod_cache
            .clone()
            .unwrap_or_else(crate::stacks::debuginfod::default_cache_dir)
    }

    /// The servers to ask and how (`None`: none).
    pub fn config(&self) -> Option<crate::stacks::debuginfod::DebuginfodConfig> {
        let urls = self.servers();
        (!urls.is_empty()).then(|| crate::stacks::debuginfod::DebuginfodConfig {
            urls,
            cache_dir: self.cache_dir(),
            cache_max_bytes: self.debuginfod_cache_mib.saturating_mul(1 << 20),
            timeout: self.debuginfod_timeout,
        })
    }
}

fn parse_seconds(value: &str) -> Result<std::time::Duration, String> {
    match value.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(std::time::Duration::from_secs_f64(secs)),
        _ => Err(format!("`{value}` is not a positive number of seconds")),
    }
}

fn parse_millis(value: &str) -> Result<std::time::Duration, String> {
    match value.parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(std::time::Duration::from_millis(ms)),
        _ => Err(format!(
            "`{value}` is not a positive number of milliseconds"
        )),
    }
}

fn parse_rate(value: &str) -> Result<u64, String> {
    match value.trim_end_matches("/s").parse::<u64>() {
        Ok(n) if n > 0 && n <= 1_000_000_000 => Ok(n),
        _ => Err(format!(
            "`{value}` is not a rate like 1000/s (1 to 10^9 per second)"
        )),
    }
}

fn parse_glob(value: &str) -> Result<glob::Pattern, String> {
    glob::Pattern::new(value).map_err(|e| format!("`{value}` is not a valid glob: {e}"))
}

fn parse_container_api(
    value: &str,
) -> Result<(crate::output::containers::Runtime, std::path::PathBuf), String> {
    use crate::output::containers::Runtime;
    let (runtime, socket) = value.split_once('=').ok_or_else(|| {
        format!("{value:?} is not RUNTIME=SOCKET, e.g. podman=/run/podman/podman.sock")
    })?;
    let runtime = match runtime {
        "docker" => Runtime::Docker,
        "podman" => Runtime::Podman,
        "containerd" => Runtime::Containerd,
        other => {
            return Err(format!(
                "{other:?}: the runtimes asked are docker, podman (the Docker Engine API) and containerd (its own API); CRI-O is not"
            ));
        }
    };
    Ok((runtime, socket.into()))
}

fn parse_container_id(id: &str) -> Result<String, String> {
    if id.len() < 4 {
        return Err(format!(
            "a container id prefix needs at least 4 characters (got {id:?}): a shorter one would match unrelated containers"
        ));
    }
    Ok(id.to_string())
}

fn parse_comm(value: &str) -> Result<String, String> {
    match value.len() {
        0 => Err("a command name cannot be empty".into()),
        1..=15 => Ok(value.to_string()),
        n => Err(format!(
            "{n} bytes is too long: the kernel keeps at most 15 bytes of a command name"
        )),
    }
}

fn parse_ringbuf_size(value: &str) -> Result<u32, String> {
    let size: u32 = value
        .parse()
        .map_err(|_| format!("`{value}` is not a number of bytes"))?;
    if size < 4096 || !size.is_power_of_two() {
        return Err(format!("{size} is not a power of two of at least 4096"));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_values() {
        assert!(parse_comm("a-name-longer-than-15").is_err());
        assert!(parse_comm("nginx").is_ok());
        assert!(parse_ringbuf_size("5000").is_err());
        assert!(parse_ringbuf_size("1024").is_err());
        assert_eq!(parse_ringbuf_size("8192"), Ok(8192));
    }
}
