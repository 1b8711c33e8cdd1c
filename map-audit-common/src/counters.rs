//! Indices of the kernel's per-CPU counters. Every event the kernel produces or loses
//! is counted here, so the agent can prove `produced = delivered + lost`.

/// Audited write faults: in scope, write, inside a tracked region.
pub const FAULTS_MATCHED: u32 = 0;
/// Fault records that did not fit in the ring buffer.
pub const FAULTS_LOST_RINGBUF_FULL: u32 = 1;
/// Region records (mapped/unmapped) produced.
pub const REGION_EVENTS: u32 = 2;
/// Region records that did not fit in the ring buffer.
pub const REGION_EVENTS_LOST_RINGBUF_FULL: u32 = 3;
/// Trie entries that could not be inserted (table full): parts of regions unaudited.
pub const REGION_TABLE_FULL: u32 = 4;
/// mmap/munmap calls whose arguments could not be saved (pending table full).
pub const PENDING_TABLE_FULL: u32 = 5;
/// User stacks that filled the whole buffer (`MAX_STACK_DEPTH`) with frames left.
pub const STACKS_TRUNCATED: u32 = 6;
/// User stacks that could not be captured at all.
pub const STACKS_FAILED: u32 = 7;
/// Unmap/mprotect ranges handed to the agent to finish (gaps skipped or steps exhausted).
pub const RANGES_HANDED_TO_AGENT: u32 = 8;
/// Processes added to the scope by fork or by a matching comm.
pub const SCOPE_ADDED: u32 = 9;
/// Processes that could not be added to the scope (scope table full).
pub const SCOPE_TABLE_FULL: u32 = 10;
/// Process records (fork, exec, exit) that did not fit in the ring buffer.
pub const PROCESS_RECORDS_LOST_RINGBUF_FULL: u32 = 11;
/// Mapped-file records produced.
pub const FILE_RECORDS: u32 = 12;
/// Mapped-file records that did not fit in the ring buffer (the path falls back to
/// the agent's /proc snapshot).
pub const FILE_RECORDS_LOST_RINGBUF_FULL: u32 = 13;
/// Process records (fork, exec, exit) produced.
pub const PROCESS_RECORDS: u32 = 14;
/// Faults matched through the parent's regions (a fork the agent had not copied yet).
pub const FAULTS_MATCHED_VIA_PARENT: u32 = 15;
/// Write faults in tracked regions that the region filters (`--wx-only`, `--path`,
/// ...) exclude: not sent, by choice (not a loss).
pub const FAULTS_FILTERED: u32 = 16;
/// Faults dropped by the per-process `--rate-limit` (a counted loss).
pub const FAULTS_RATE_LIMITED: u32 = 17;
/// Faults counted in a kernel-side aggregate (default mode) instead of sent as records;
/// the agent reports them in its aggregates' counts (not a loss).
pub const FAULTS_COUNTED_IN_KERNEL: u32 = 18;
/// Faults sent as single records because the kernel's aggregate table was full (not
/// a loss: slower).
pub const FAULT_AGGREGATES_FULL: u32 = 19;
/// Write faults of a just-forked child that its parent's regions could not place
/// because the parent had changed its mappings (or gone) since the fork, before the
/// agent copied the regions: possibly audited writes not reported (a counted loss).
pub const FAULTS_UNATTRIBUTED_AFTER_FORK: u32 = 20;
/// Execs whose new mappings (program, interpreter, stack) the kernel could not read
/// before the program ran (no `bpf_find_vma`, or a VMA walk that failed): those
/// regions are loaded from /proc later, and writes before that are not audited.
pub const EXEC_MAPPINGS_UNREAD: u32 = 21;
/// brk calls of in-scope processes whose heap could not be followed (unreadable mm).
pub const BRK_UNTRACKED: u32 = 22;
/// Region-table edits that waited too long for another thread's edit of the same
/// process and went ahead unserialised (a rare race: the agent checks that process's
/// table against its copy afterwards).
pub const TABLE_LOCK_TIMEOUTS: u32 = 23;
/// User stacks that stopped at a frame whose code has no unwind table (a file without
/// CFI, or one whose table was not built yet or did not fit): marked truncated.
pub const STACKS_NO_UNWIND_INFO: u32 = 24;
/// User stacks that stopped at stack memory that could not be read: marked truncated.
pub const STACKS_UNREADABLE: u32 = 25;
/// User stacks that stopped at code not in a file (JIT): marked truncated.
pub const STACKS_IN_ANONYMOUS_CODE: u32 = 26;
/// Number of counters.
pub const COUNTER_COUNT: u32 = 27;
