//! The kernel's per-CPU counters (`COUNTERS`, by index) and the agent's own, declared
//! once each (see `counter_catalogue`). Every event the kernel produces or loses is
//! counted, so the agent can prove `produced = delivered + lost`.

use crate::{indexed_counters, named_counters};

indexed_counters! {
    /// The kernel's counters, summed over CPUs.
    pub struct KernelCounters, COUNTER_COUNT {
            /// Audited write faults: in scope, write, inside a tracked region.
            FAULTS_MATCHED = 0, faults_matched: Count;
                /// Fault records that did not fit in the ring buffer.
            FAULTS_LOST_RINGBUF_FULL = 1, faults_lost_ringbuf_full: Loss;
                /// Region records (mapped/unmapped) produced.
            REGION_EVENTS = 2, region_events: Count;
                /// Region records that did not fit in the ring buffer.
            REGION_EVENTS_LOST_RINGBUF_FULL = 3, region_events_lost_ringbuf_full: Loss;
                /// Trie entries that could not be inserted (table full): parts of regions unaudited.
            REGION_TABLE_FULL = 4, region_table_full: Loss;
                /// mmap/munmap calls whose arguments could not be saved (pending table full).
            PENDING_TABLE_FULL = 5, pending_table_full: Loss;
                /// User stacks that filled the whole buffer (`MAX_STACK_DEPTH`) with frames left.
            STACKS_TRUNCATED = 6, stacks_truncated: Loss;
                /// User stacks that could not be captured at all.
            STACKS_FAILED = 7, stacks_failed: Loss;
                /// Unmap/mprotect ranges handed to the agent to finish (gaps skipped or steps exhausted).
            RANGES_HANDED_TO_AGENT = 8, ranges_handed_to_agent: Count;
                /// Processes added to the scope by fork or by a matching comm.
            SCOPE_ADDED = 9, scope_added: Count;
                /// Processes that could not be added to the scope (scope table full).
            SCOPE_TABLE_FULL = 10, scope_table_full: Loss;
                /// Process records (fork, exec, exit) that did not fit in the ring buffer.
            PROCESS_RECORDS_LOST_RINGBUF_FULL = 11, process_records_lost_ringbuf_full: Loss;
                /// Mapped-file records produced.
            FILE_RECORDS = 12, file_records: Count;
                /// Mapped-file records that did not fit in the ring buffer (the path falls back to
                /// the agent's /proc snapshot).
            FILE_RECORDS_LOST_RINGBUF_FULL = 13, file_records_lost_ringbuf_full: Loss;
                /// Process records (fork, exec, exit) produced.
            PROCESS_RECORDS = 14, process_records: Count;
                /// Faults matched through the parent's regions (a fork the agent had not copied yet).
            FAULTS_MATCHED_VIA_PARENT = 15, faults_matched_via_parent: Count;
                /// Write faults in tracked regions that the region filters (`--wx-only`, `--path`,
                /// ...) exclude: not sent, by choice (not a loss).
            FAULTS_FILTERED = 16, faults_filtered: Count;
                /// Faults dropped by the per-process `--rate-limit` (a counted loss).
            FAULTS_RATE_LIMITED = 17, faults_rate_limited: Loss;
                /// Faults counted in a kernel-side aggregate (default mode) instead of sent as records;
                /// the agent reports them in its aggregates' counts (not a loss).
            FAULTS_COUNTED_IN_KERNEL = 18, faults_counted_in_kernel: Count;
                /// Faults sent as single records because the kernel's aggregate table was full (not
                /// a loss: slower).
            FAULT_AGGREGATES_FULL = 19, fault_aggregates_full: Count;
                /// Write faults of a just-forked child that its parent's regions could not place
                /// because the parent had changed its mappings (or gone) since the fork, before the
                /// agent copied the regions: possibly audited writes not reported (a counted loss).
            FAULTS_UNATTRIBUTED_AFTER_FORK = 20, faults_unattributed_after_fork: Loss;
                /// Execs whose new mappings (program, interpreter, stack) the kernel could not read
                /// before the program ran (no `bpf_find_vma`, or a VMA walk that failed): those
                /// regions are loaded from /proc later, and writes before that are not audited.
            EXEC_MAPPINGS_UNREAD = 21, exec_mappings_unread: Loss;
                /// brk calls of in-scope processes whose heap could not be followed (unreadable mm).
            BRK_UNTRACKED = 22, brk_untracked: Loss;
                /// Region-table edits that waited too long for another thread's edit of the same
                /// process and went ahead unserialised (a rare race: the agent checks that process's
                /// table against its copy afterwards).
            TABLE_LOCK_TIMEOUTS = 23, table_lock_timeouts: Loss;
                /// User stacks that stopped at a frame whose code has no unwind table (a file without
                /// CFI, or one whose table did not fit; for a write the kernel made, also one not
                /// built yet): marked truncated.
            STACKS_NO_UNWIND_INFO = 24, stacks_no_unwind_info: Loss;
                /// User stacks that stopped at stack memory that could not be read: marked truncated.
            STACKS_UNREADABLE = 25, stacks_unreadable: Loss;
                /// User stacks that stopped at code not in a file (JIT): marked truncated.
            STACKS_IN_ANONYMOUS_CODE = 26, stacks_in_anonymous_code: Loss;
        /// Forks whose fallback to the parent's regions could not be stored (table
        /// full): the child's writes before the agent copies its regions are missed.
        FORK_FALLBACKS_FULL = 27, fork_fallbacks_full: Loss;
        /// Processes `--rate-limit` could not hold back (bucket table full): their
        /// records all go out (not a loss).
        RATE_BUCKETS_FULL = 28, rate_buckets_full: Count;
        /// `watch`: writes the hardware watchpoints caught (each is a record, or lost).
        WATCH_HITS = 29, watch_hits: Count;
        /// `watch`: hits lost because the ring buffer was full.
        WATCH_HITS_LOST_RINGBUF_FULL = 30, watch_hits_lost_ringbuf_full: Loss;
        /// `watch --rate-limit`: hits held back over the rate.
        WATCH_HITS_RATE_LIMITED = 31, watch_hits_rate_limited: Loss;
        /// `watch`: writes the kernel made to a watched address for the process
        /// (read() into it): counted here, not reported (no user registers to walk).
        WATCH_KERNEL_WRITES = 32, watch_kernel_writes: Loss;
        /// msync calls of in-scope processes on tracked regions (each is a record, or
        /// lost).
        MSYNCS = 33, msyncs: Count;
        /// msync calls of in-scope processes whose start is in no tracked region (not
        /// reported: nothing audited there).
        MSYNCS_UNTRACKED = 34, msyncs_untracked: Count;
        /// msync records lost because the ring buffer was full.
        MSYNCS_LOST_RINGBUF_FULL = 35, msyncs_lost_ringbuf_full: Loss;
        /// msync records held back by `--rate-limit`.
        MSYNCS_RATE_LIMITED = 36, msyncs_rate_limited: Loss;
        /// Pages of shared file mappings dirtied by a write fault (a record each, or lost).
        PAGES_DIRTIED = 37, pages_dirtied: Count;
        /// Dirtied-page records lost because the ring buffer was full: the next
        /// `region_synced` of that range undercounts `pages_written_since_last_sync`.
        PAGES_DIRTIED_LOST_RINGBUF_FULL = 38, pages_dirtied_lost_ringbuf_full: Loss;
        /// `--container`: cgroups made while the agent ran (a record each, or lost).
        CGROUP_RECORDS = 39, cgroup_records: Count;
        /// Made-cgroup records lost because the ring buffer was full: a container
        /// started then is not found until its processes are seen otherwise.
        CGROUP_RECORDS_LOST_RINGBUF_FULL = 40, cgroup_records_lost_ringbuf_full: Loss;
        /// User stacks that reached code whose unwind table the agent had not built
        /// yet (a program's first writes after its exec): sent with a copy of the stack
        /// for the agent to finish (a record each, never counted in a kernel tally).
        STACK_SNAPSHOTS = 41, stack_snapshots: Count;
        /// Faults counted in their kernel tally with the stack of an earlier fault at
        /// the same pc and stack pointer, whose stack words the walk read were
        /// unchanged (the same stack, not walked again; see `stack_memo`).
        STACKS_RECALLED = 42, stacks_recalled: Count;
    }
}

named_counters! {
    /// The agent's counters.
    pub struct AgentCounters {
        /// Faults delivered (in aggregated mode, the sum of the events' `count`).
        faults_delivered: Count;
        /// `write_fault` events written.
        write_fault_events: Count;
        /// Faults the kernel sent while a region's `--path` verdict was pending and the
        /// agent then filtered out (by choice, not a loss).
        faults_filtered_by_agent: Count;
        /// Region and process records received (= kernel `region_events` +
        /// `process_records` minus their losses).
        region_and_process_records_delivered: Count;
        /// Writable regions the agent closed itself (exec, exit).
        regions_closed_by_agent: Count;
        /// Mapped-file (path) records received.
        file_records_delivered: Count;
        /// Ring-buffer items that could not be decoded.
        records_undecodable: Loss;
        /// Stacks cut to `--max-stack-depth` frames for the output (by choice).
        stacks_cut_for_output: Count;
        /// Stack frames left without a symbol.
        frames_unsymbolized: Loss;
        /// Debug files fetched from debuginfod servers (`--debuginfod`), found or not.
        debuginfod_fetches: Count;
        /// Debug files found in the debuginfod cache, no server asked.
        debuginfod_cache_hits: Count;
        /// Modules whose debug file no server has (404 from each): their frames
        /// stay unnamed, as they would without debuginfod.
        debuginfod_not_found: Count;
        /// Requests that failed (server down, timeout, HTTP error, or the servers
        /// backing off after a failure): the module's frames stay unnamed until it is
        /// asked again, a minute later.
        debuginfod_misses: Loss;
        /// Bytes of debug files fetched.
        debuginfod_bytes: Count;
        /// Aggregates reported after waiting `--debuginfod-wait` for a debug file that
        /// had not arrived: their frames in that module go out unnamed
        /// (`symbol_missing: "debuginfo_pending"`).
        aggregates_sent_before_debug_file: Loss;
        /// File-backed regions reported without a path (neither the kernel's capture nor
        /// the /proc snapshot had it).
        paths_unresolved: Loss;
        /// Records whose cgroup id the agent could not name (the cgroup was gone, or
        /// the cgroup tree had been walked less than a second before): their events
        /// say `cgroup.path` null, and no container or pod.
        cgroup_paths_unresolved: Loss;
        /// Made-cgroup records received (`--container`, `--pod`).
        cgroup_records_delivered: Count;
        /// `--container`, `--pod`: container and pod cgroups put in the scope (at
        /// start, and as they were made).
        containers_scoped: Count;
        /// Containers whose runtime answered a lookup of their name and image.
        container_lookups: Count;
        /// Container lookups that failed (the socket missing, no answer within 2 s, the
        /// container gone): that container's events keep null names.
        container_lookup_misses: Loss;
        /// Captured paths deeper than the kernel walks (reported with a leading "...").
        paths_truncated: Loss;
        /// Lines that could not be written (output closed or failing).
        lines_unwritten: Loss;
        /// Region blocks the agent could not put in the kernel's table (it was full): part
        /// of a region from /proc or a fork's copy unaudited.
        region_blocks_not_inserted: Loss;
        /// Processes that kept changing their mappings while the agent loaded them from
        /// /proc at start: loaded as last read.
        processes_seeded_unsettled: Loss;
        /// Executable files whose unwind rows did not fit (`--unwind-table-rows`): their
        /// frames end stacks.
        unwind_table_full: Loss;
        /// Executable files without CFI (or unreadable): their frames end stacks, or are
        /// walked by frame pointers with `--unwind auto`.
        unwind_info_missing: Loss;
        /// Unwind tables built.
        unwind_tables_built: Count;
        /// Fault stacks the kernel stopped at code whose table was not built yet
        /// (kernel `stack_snapshots`), finished by the agent to their end.
        stacks_finished_by_agent: Count;
        /// Such stacks that still ended early (their `stack_end` says why): marked
        /// truncated.
        stacks_unfinished_by_agent: Loss;
        /// Removals from the kernel's tables (regions, fork fallbacks, `--path`
        /// verdicts, tallies, unwind files) and verdicts they refused, other than for an
        /// entry already gone: a stale entry may stay, a verdict is decided by the agent.
        kernel_table_edits_failed: Loss;
        /// Re-arm rounds started (`--rearm-interval`).
        rearm_rounds: Count;
        /// Processes re-armed (their soft-dirty bits cleared), one per process per round.
        processes_rearmed: Count;
        /// Re-arms that failed (clear_refs was refused): that process's rewrites in
        /// that round are not seen.
        rearm_failed: Count;
        /// Processes that had exited (or were exiting) when their round came: nothing
        /// to re-arm, nothing lost.
        rearm_process_gone: Count;
        /// Re-arms skipped because the process's previous round went over
        /// `--rearm-budget` (by choice): its rewrites in that round are not seen.
        rearm_skipped_over_budget: Count;
        /// `watch`: hits reported, alone or in `write_watch` aggregates (their counts).
        watch_hits_delivered: Count;
        /// `watch`: `write_watch` events written.
        write_watch_events: Count;
        /// msync calls reported, alone or in `region_synced` aggregates (their counts).
        msyncs_delivered: Count;
        /// msync calls on regions the region filters (`--path`, ...) leave out.
        msyncs_filtered_by_agent: Count;
        /// `region_synced` events written.
        region_synced_events: Count;
        /// Dirtied-page records received.
        pages_dirtied_delivered: Count;
        /// `region_unsynced` warnings written (`--unsynced-after`).
        region_unsynced_events: Count;
    }
}
