//! The names the agent finds the programs' maps and globals by: each is the name of
//! the eBPF crate's static (`map-audit-ebpf/src/maps.rs`, `go_writers.rs`); the agent's
//! tests check the built object against `MAPS`.

/// aya-log's ring buffer (`--kernel-log`), from `aya-log-ebpf`.
pub const AYA_LOGS: &str = "AYA_LOGS";
pub const COUNTERS: &str = "COUNTERS";
pub const EVENTS: &str = "EVENTS";
pub const EXEC_WALK: &str = "EXEC_WALK";
pub const FAULT_SCRATCH: &str = "FAULT_SCRATCH";
pub const FAULT_TALLIES: &str = "FAULT_TALLIES";
pub const FILE_TABLES: &str = "FILE_TABLES";
pub const FORK_FALLBACKS: &str = "FORK_FALLBACKS";
pub const FRAME_WALK: &str = "FRAME_WALK";
pub const GO_COUNTERS: &str = "GO_COUNTERS";
pub const GO_GOROUTINES: &str = "GO_GOROUTINES";
pub const GO_WRITERS: &str = "GO_WRITERS";
pub const GO_WRITER_SCRATCH: &str = "GO_WRITER_SCRATCH";
pub const ID_SEQUENCE: &str = "ID_SEQUENCE";
pub const PATH_VERDICTS: &str = "PATH_VERDICTS";
pub const PENDING_CALLS: &str = "PENDING_CALLS";
pub const RANGE_WALK: &str = "RANGE_WALK";
pub const RATE_BUCKETS: &str = "RATE_BUCKETS";
pub const REGIONS: &str = "REGIONS";
pub const REGION_CACHE: &str = "REGION_CACHE";
pub const RINGBUF_HIGH_WATER: &str = "RINGBUF_HIGH_WATER";
pub const SCOPE: &str = "SCOPE";
pub const SCOPE_CGROUPS: &str = "SCOPE_CGROUPS";
pub const SCOPE_CGROUP_LEVELS: &str = "SCOPE_CGROUP_LEVELS";
pub const SCOPE_COMMS: &str = "SCOPE_COMMS";
pub const STACK_MEMOS: &str = "STACK_MEMOS";
pub const STACK_WINDOW: &str = "STACK_WINDOW";
pub const TABLE_EDIT: &str = "TABLE_EDIT";
pub const TABLE_VERSIONS: &str = "TABLE_VERSIONS";
pub const TICK_CLOCK: &str = "TICK_CLOCK";
pub const TALLY_EPOCH: &str = "TALLY_EPOCH";
pub const UNWIND_CACHE: &str = "UNWIND_CACHE";
pub const UNWIND_ROWS: &str = "UNWIND_ROWS";
pub const WATCH_SCRATCH: &str = "WATCH_SCRATCH";
pub const SYNC_SCRATCH: &str = "SYNC_SCRATCH";

/// Every map of the object.
pub const MAPS: [&str; 35] = [
    AYA_LOGS,
    COUNTERS,
    EVENTS,
    EXEC_WALK,
    FAULT_SCRATCH,
    FAULT_TALLIES,
    FILE_TABLES,
    FORK_FALLBACKS,
    FRAME_WALK,
    GO_COUNTERS,
    GO_GOROUTINES,
    GO_WRITERS,
    GO_WRITER_SCRATCH,
    ID_SEQUENCE,
    PATH_VERDICTS,
    PENDING_CALLS,
    RANGE_WALK,
    RATE_BUCKETS,
    REGIONS,
    REGION_CACHE,
    RINGBUF_HIGH_WATER,
    SCOPE,
    SCOPE_CGROUPS,
    SCOPE_CGROUP_LEVELS,
    SCOPE_COMMS,
    STACK_MEMOS,
    STACK_WINDOW,
    TABLE_EDIT,
    TABLE_VERSIONS,
    TICK_CLOCK,
    TALLY_EPOCH,
    UNWIND_CACHE,
    UNWIND_ROWS,
    WATCH_SCRATCH,
    SYNC_SCRATCH,
];

/// Read-only globals the agent sets at load time.
pub const TRACEPOINT_OFFSETS: &str = "TRACEPOINT_OFFSETS";
pub const AGENT_CONFIG: &str = "AGENT_CONFIG";
pub const KERNEL_OFFSETS: &str = "KERNEL_OFFSETS";
pub const GO_CONFIG: &str = "GO_CONFIG";

/// Every global the agent sets.
pub const GLOBALS: [&str; 4] = [TRACEPOINT_OFFSETS, AGENT_CONFIG, KERNEL_OFFSETS, GO_CONFIG];
