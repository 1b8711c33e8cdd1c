//! `map-audit run`: load and attach the eBPF programs, set the scope, then move records
//! from the ring buffer through the pipeline until a signal or the command's exit.

use std::{
    path::PathBuf,
    sync::{Arc, OnceLock, mpsc::SyncSender},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::output::{
    container_api::ContainerApis,
    containers::{PodRef, Runtime},
};
use anyhow::{Context, Result, anyhow, bail};
use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf};
use map_audit_common::{
    COMM_LEN,
    config::{AgentConfig, KernelOffsets, TracepointOffsets},
    map_names,
    region_filter::RegionFilterRule,
};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{
    commands::cli::{EbpfObject, OutputFormat, RunArgs, UnwindMode},
    commands::read_loop::{Reader, StopWhen, read_until_stopped},
    commands::signals::runtime_with_signals,
    commands::watch::{self, watch_spec::WatchSpec},
    kernel::cgroup::Cgroup,
    kernel::counters as stats,
    kernel::feature_probes::ProgramObject,
    kernel::kernel_btf::KernelBtf,
    kernel::kernel_support,
    kernel::kernel_tallies::KernelTallies,
    kernel::loader::{self, raise_memlock_limit},
    kernel::programs::{AttachedHook, take_map},
    kernel::region_table::RegionTable,
    kernel::scope_cgroups::ScopeCgroups,
    kernel::table_maps::KernelMaps,
    kernel::tracefs,
    output::addresses,
    output::clock::Clock,
    output::events::{AgentStarted, Body, Programs, Scope},
    output::json_writer::JsonWriter,
    output::metrics,
    output::metrics_server,
    pipeline,
    pipeline::Message,
    pipeline::proc_seed,
    pipeline::rearm_rounds::RearmRounds,
    pipeline::region_filter::RegionFilter,
    pipeline::ringbuf_reader,
    pipeline::{correlator::Options, items::Item},
    proc::mount_points::MountPoints,
    proc::process_maps::Snapshots,
    proc::target::{self, HeldCommand},
    stacks::unwind::{
        self,
        tables::{SharedTables, UnwindTables},
    },
};

/// Forwards the eBPF programs' aya-log records to the `log` crate.
type KernelLogger = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Runs the agent; returns the process exit code.
pub fn run(args: RunArgs) -> Result<i32> {
    audit(args, None)
}

/// `run`, or `watch` with the watches asked for: then the fault hooks stay detached
/// and the watchpoints are set on the one process before output starts.
pub fn audit(args: RunArgs, watches: Option<Vec<WatchSpec>>) -> Result<i32> {
    if args.pids.is_empty()
        && args.comms.is_empty()
        && args.command.is_empty()
        && !args.all
        && args.cgroup.is_none()
        && args.containers.is_empty()
        && args.pods.is_empty()
    {
        return Err(anyhow!(
            "nothing to audit: give --pid PID, --comm NAME, --cgroup PATH, --container ID, --pod NAMESPACE/NAME, --all, or -- COMMAND [ARGS]"
        ));
    }
    let object = match (
        kernel_support::require_run_prerequisites()?,
        args.ebpf_object,
    ) {
        (probed, EbpfObject::Auto) => probed,
        (_, EbpfObject::Linux5_17) => ProgramObject::Linux5_17,
        (_, EbpfObject::Linux5_10) => ProgramObject::Linux5_10,
    };
    if args.rearm_interval.is_some() {
        kernel_support::require_soft_dirty()?;
    }
    target::check_pids(&args.pids)?;
    addresses::set_redacted(args.redact_addresses);
    let cgroup = args.cgroup.as_deref().map(Cgroup::resolve).transpose()?;
    let tracefs = tracefs::root()?;
    let offsets = tracefs::tracepoint_offsets(&tracefs)?;
    let kernel_offsets = loader::kernel_offsets(&KernelBtf::from_sys_fs()?).context(
        "this kernel's structs differ from what map-audit reads to find mapped files' paths",
    )?;
    raise_memlock_limit();
    if let Some(addr) = &args.metrics_addr {
        let bound = metrics_server::start(addr)?;
        log::info!("serving metrics on http://{bound}/metrics");
    }

    let filter = region_filter(&args);
    let (mut ebpf, mut hooks, mut kernel_logger) = load_and_attach(
        &args,
        &filter,
        object,
        offsets,
        kernel_offsets,
        watches.is_none(),
    )?;
    let unwind_tables = SharedTables::new(unwind_tables(&mut ebpf, &args)?);
    let mut table = region_table(&mut ebpf)?;
    scope_comms(&mut ebpf, &args.comms)?;
    let (scope_cgroups, cgroups) = scope_cgroups(&mut ebpf, &args, cgroup)?;
    // Processes running now: in scope with their mappings before auditing begins.
    let mut snapshots = Snapshots::default();
    let seeds = seed_running(
        &args,
        &cgroups,
        &mut table,
        &filter,
        &mut snapshots,
        &unwind_tables,
    )?;
    // After the scope is set up: the command is held until its pid is in scope.
    let mut held = spawn_command(
        &args,
        &mut table,
        &mut unwind_tables.lock(),
        watches.is_some(),
    )?;
    let watches_set = match &watches {
        Some(specs) => Some(watch::set_watches(
            &mut ebpf,
            &args,
            specs,
            held.as_mut(),
            &mut hooks,
        )?),
        None => None,
    };
    // Before `agent_started`.
    let (runtime, signals) = runtime_with_signals()?;
    let writer = start_output(&args, object, hooks)?;
    let (pipeline, pipeline_thread, flush_requests, output_closed) = start_pipeline(
        &mut ebpf,
        &args,
        table,
        unwind_tables.clone(),
        writer,
        (seeds, scope_cgroups),
        watches_set.is_none(),
    )?;
    if let Some((pid, points, threads)) = watches_set {
        pipeline
            .send(Message::WatchesSet {
                pid,
                points,
                threads,
            })
            .context("the pipeline stopped")?;
    }

    let counters: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(take_map(&mut ebpf, map_names::COUNTERS)?)?;
    let ring = RingBuf::try_from(take_map(&mut ebpf, map_names::EVENTS)?)?;
    let stats_interval =
        (args.stats_interval > 0).then(|| Duration::from_secs(args.stats_interval));
    let high_water = Array::try_from(take_map(&mut ebpf, map_names::RINGBUF_HIGH_WATER)?)?;
    let flush_interval = args
        .rearm_interval
        .or((!args.every_event).then_some(args.flush_interval));
    let stop = StopWhen {
        command: held,
        // `watch --pid`: the process's end ends the run.
        pid_gone: (watches.is_some() && args.command.is_empty()).then(|| args.pids[0]),
        duration: None,
    };
    let exit_code = runtime.block_on(async {
        let mut reader = RunReader {
            programs: Some(ebpf),
            snapshots,
            mounts: MountPoints::default(),
            unwind_tables,
            counters: &counters,
            pipeline: &pipeline,
            flush_tick: RunReader::flush_tick(flush_interval),
            kernel_logger: kernel_logger.as_mut(),
            output_closed: &output_closed,
            high_water,
            flush_requests,
            unsynced_checked: args.unsynced_after.map(|_| Instant::now()),
        };
        // `--rearm-interval`: the first round starts at once (the processes running
        // now may be warm already, and a command may end within an interval).
        if args.rearm_interval.is_some() && pipeline.send(Message::Flush).is_err() {
            return Ok(None);
        }
        read_until_stopped(ring, &mut reader, signals, stop, stats_interval).await
    })?;

    let kernel = stats::read_kernel(&counters)?;
    // A pipeline that is gone already ended with its error, which its join returns.
    let _ = pipeline.send(Message::Stop {
        kernel,
        command_exit_code: exit_code,
    });
    drop(pipeline);
    pipeline_thread
        .join()
        .map_err(|_| anyhow!("the pipeline thread panicked"))?;
    if let Some(reason) = output_closed.get() {
        return Err(anyhow!(
            "the output failed ({reason}), so the agent stopped"
        ));
    }
    Ok(exit_code.unwrap_or(0))
}

/// The region filters given, as both the kernel and the agent apply them.
fn region_filter(args: &RunArgs) -> RegionFilter {
    RegionFilter {
        rule: RegionFilterRule {
            wx_only: u32::from(args.wx_only),
            shared_only: u32::from(args.shared_only),
            anon_only: u32::from(args.anon_only),
            _pad: 0,
            min_size: args.min_size,
        },
        path: args.path.clone(),
    }
}

/// Loads the programs with this run's configuration and attaches every hook; the
/// kernel-side logger when asked for.
fn load_and_attach(
    args: &RunArgs,
    filter: &RegionFilter,
    object: ProgramObject,
    offsets: TracepointOffsets,
    kernel_offsets: KernelOffsets,
    fault_hooks: bool,
) -> Result<(aya::Ebpf, Vec<AttachedHook>, Option<KernelLogger>)> {
    let log_enabled = args.kernel_log || std::env::var_os("RUST_LOG").is_some();
    let mut ebpf = loader::load(&loader::LoadOptions {
        object,
        offsets,
        kernel_offsets,
        config: AgentConfig {
            match_comm: u32::from(!args.comms.is_empty()),
            log_enabled: u32::from(log_enabled),
            scope_all: u32::from(args.all),
            agent_tgid: std::process::id(),
            match_cgroups: u32::from(
                args.cgroup.is_some() || !args.containers.is_empty() || !args.pods.is_empty(),
            ),
            path_filter: u32::from(args.path.is_some()),
            aggregate_in_kernel: u32::from(!args.every_event),
            unwind_mode: args.unwind.config_value(),
            region_filter: filter.rule,
            rate_limit: args.rate_limit.unwrap_or(0),
        },

        ringbuf_bytes: args.ringbuf_size,
        region_table_entries: args.region_table_size,
        unwind_rows: args.unwind_table_rows,
    })?;
    let kernel_logger = if log_enabled {
        match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(logger) => Some(logger),
            Err(err) => {
                log::warn!("kernel-side logging is unavailable: {err}");
                None
            }
        }
    } else {
        None
    };
    let exec_program = loader::exec_program(object, &kernel_offsets);
    let mut hooks = loader::attach(
        &mut ebpf,
        exec_program,
        fault_hooks.then_some(args.fault_hook),
    )?;
    if !args.containers.is_empty() || !args.pods.is_empty() {
        hooks.push(loader::attach_cgroup_mkdir(&mut ebpf)?);
    }
    if let Some(metrics) = metrics::get() {
        metrics.hooks_attached(&hooks);
        metrics.table_capacity("regions", u64::from(args.region_table_size));
        metrics.ringbuf(u64::from(args.ringbuf_size), 0);
    }
    Ok((ebpf, hooks, kernel_logger))
}

/// The agent's side of the kernel's region table and scope.
fn region_table(ebpf: &mut aya::Ebpf) -> Result<RegionTable> {
    Ok(RegionTable::new(Box::new(KernelMaps {
        regions: LpmTrie::try_from(take_map(ebpf, map_names::REGIONS)?)?,
        scope: HashMap::try_from(take_map(ebpf, map_names::SCOPE)?)?,
        pending: HashMap::try_from(take_map(ebpf, map_names::PENDING_CALLS)?)?,
        fork_fallbacks: HashMap::try_from(take_map(ebpf, map_names::FORK_FALLBACKS)?)?,
        path_verdicts: HashMap::try_from(take_map(ebpf, map_names::PATH_VERDICTS)?)?,
        versions: Array::try_from(take_map(ebpf, map_names::TABLE_VERSIONS)?)?,
    })))
}

/// `--comm`: names whose processes join the scope at their next exec or mmap.
fn scope_comms(ebpf: &mut aya::Ebpf, names: &[String]) -> Result<()> {
    let mut comms: HashMap<_, [u8; COMM_LEN], u32> =
        HashMap::try_from(take_map(ebpf, map_names::SCOPE_COMMS)?)?;
    for name in names {
        let mut key = [0u8; COMM_LEN];
        key[..name.len()].copy_from_slice(name.as_bytes());
        comms
            .insert(key, 1, 0)
            .with_context(|| format!("adding comm {name} to the scope failed"))?;
    }
    Ok(())
}

/// `--cgroup`, `--container` and `--pod`: their cgroups in the kernel's scope, and the
/// cgroups whose processes run now (loaded from /proc).
fn scope_cgroups(
    ebpf: &mut aya::Ebpf,
    args: &RunArgs,
    cgroup: Option<Cgroup>,
) -> Result<(Option<ScopeCgroups>, Vec<Cgroup>)> {
    if cgroup.is_none() && args.containers.is_empty() && args.pods.is_empty() {
        return Ok((None, Vec::new()));
    }
    let pods = pod_uids(args)?;
    let mut scope = ScopeCgroups::new(
        HashMap::try_from(take_map(ebpf, map_names::SCOPE_CGROUPS)?)?,
        Array::try_from(take_map(ebpf, map_names::SCOPE_CGROUP_LEVELS)?)?,
        args.containers.clone(),
        pods,
    );
    let mut cgroups = Vec::new();
    if let Some(cgroup) = cgroup {
        scope.add(cgroup.id, cgroup.level)?;
        cgroups.push(cgroup);
    }
    if !args.containers.is_empty() || !args.pods.is_empty() {
        cgroups.extend(scope.add_running_containers()?);
    }
    Ok((Some(scope), cgroups))
}

/// The processes in scope that run now: in the kernel's table with their mappings and
/// their code's unwind tables, and items for the pipeline. Their maps are read now: the
/// first record of a process that is about to exit may only be drained after it has
/// gone. Tables are built here, before `agent_started`, not by the pipeline: a write
/// the kernel walks before its table is in goes as a snapshot record of 8 KiB.
fn seed_running(
    args: &RunArgs,
    cgroups: &[Cgroup],
    table: &mut RegionTable,
    filter: &RegionFilter,
    snapshots: &mut Snapshots,
    unwind_tables: &SharedTables,
) -> Result<Vec<Item>> {
    let mut seeds = Vec::new();
    let mut running = args.pids.clone();
    running.extend(proc_seed::pids_with_comm(&args.comms));
    for cgroup in cgroups {
        running.extend(cgroup.pids());
    }
    if args.all {
        running.extend(proc_seed::all_pids());
    }
    running.retain(|&pid| pid != std::process::id());
    running.sort_unstable();
    running.dedup();
    for pid in running {
        match proc_seed::load_running(table, filter, pid) {
            Ok(seed) => {
                if let Item::Seed { regions, .. } = &seed {
                    for tracked in regions {
                        let path = tracked.path.as_deref();
                        unwind_tables.ensure_for_region(pid, &tracked.region, path);
                    }
                }
                seeds.push(Item::Maps(pid, snapshots.get(pid, true).0));
                seeds.push(seed);
            }
            Err(err) if args.pids.contains(&pid) => return Err(err),
            Err(err) => log::debug!("skipping a process that matched the scope: {err:#}"),
        }
    }
    Ok(seeds)
}

/// The unwind tables the kernel's stack walk reads, filled through their mapping.
fn unwind_tables(ebpf: &mut aya::Ebpf, args: &RunArgs) -> Result<UnwindTables> {
    // Second handles on the region table and the fork fallbacks, which the pipeline's
    // `RegionTable` owns.
    let regions = second_handle(ebpf, map_names::REGIONS)?;
    let fork_fallbacks = second_handle(ebpf, map_names::FORK_FALLBACKS)?;
    UnwindTables::new(
        match take_map(ebpf, map_names::UNWIND_ROWS)? {
            aya::maps::Map::Array(data) => data,
            _ => {
                return Err(anyhow!(
                    "UNWIND_ROWS is not an array map; rebuild with `cargo xtask build-ebpf`"
                ));
            }
        },
        args.unwind_table_rows,
        HashMap::try_from(take_map(ebpf, map_names::FILE_TABLES)?)?,
        LpmTrie::try_from(aya::maps::Map::LpmTrie(regions))?,
        HashMap::try_from(aya::maps::Map::HashMap(fork_fallbacks))?,
        args.unwind.config_value(),
    )
}

/// Another handle on the loaded map `name` (an LPM trie or a hash map), left in place.
fn second_handle(ebpf: &aya::Ebpf, name: &str) -> Result<aya::maps::MapData> {
    let data = match ebpf.map(name) {
        Some(aya::maps::Map::LpmTrie(data) | aya::maps::Map::HashMap(data)) => data,
        _ => {
            return Err(anyhow!(
                "{name} is not loaded as an LPM trie or a hash map; rebuild with `cargo xtask build-ebpf`"
            ));
        }
    };
    let fd = std::os::fd::AsFd::as_fd(data.fd()).try_clone_to_owned()?;
    Ok(aya::maps::MapData::from_fd(fd)?)
}

/// The command to audit, started and held before its exec until it is in scope.
fn spawn_command(
    args: &RunArgs,
    table: &mut RegionTable,
    unwind_tables: &mut UnwindTables,
    stop_at_exec: bool,
) -> Result<Option<HeldCommand>> {
    if args.command.is_empty() {
        return Ok(None);
    }
    // Its program's and libraries' tables first: it writes before the agent could
    // build them from its mappings' records.
    if args.unwind != UnwindMode::FramePointer {
        unwind::prebuild::command(unwind_tables, &args.command[0]);
    }
    let held = if stop_at_exec {
        HeldCommand::spawn_stopping_at_exec(&args.command)?
    } else {
        HeldCommand::spawn(&args.command)?
    };
    table
        .add_to_scope(held.pid)
        .context("adding the command to the scope failed")?;
    Ok(Some(held))
}

/// The output, opened, with `agent_started` written.
fn start_output(
    args: &RunArgs,
    object: ProgramObject,
    hooks: Vec<AttachedHook>,
) -> Result<JsonWriter> {
    let clock = Clock::new();
    let mut writer = JsonWriter::open(args.output.as_deref(), clock)?;
    writer.pretty = args.format == OutputFormat::Pretty;
    writer.write(
        None,
        Body::AgentStarted(AgentStarted {
            version: env!("CARGO_PKG_VERSION"),
            kernel_release: kernel_support::kernel_release(),
            programs: Programs {
                object,
                max_stack_depth: object.max_stack_depth(),
                degraded: object.degraded().to_vec(),
            },
            hooks,
            scope: Scope {
                pids: args.pids.clone(),
                comms: args.comms.clone(),
                command: (!args.command.is_empty()).then(|| args.command.clone()),
            },
        }),
    );
    writer.flush();
    Ok(writer)
}

/// What `start_pipeline` gives: the pipeline's input and thread, the flush barrier's
/// requests, and the output's failure (set once it fails).
type StartedPipeline = (
    SyncSender<Message>,
    JoinHandle<()>,
    UnboundedReceiver<u64>,
    Arc<OnceLock<String>>,
);

/// The runtimes asked for container names: the defaults, with `--container-api` in
/// place of a runtime's default socket; none with `--no-container-api`.
fn api_sockets(args: &RunArgs) -> Vec<(Runtime, PathBuf)> {
    if args.no_container_api {
        return Vec::new();
    }
    let mut sockets = crate::output::container_api::default_sockets();
    for (runtime, socket) in &args.container_api {
        sockets.retain(|(r, _)| r != runtime);
        sockets.push((*runtime, socket.clone()));
    }
    sockets
}

fn container_apis(args: &RunArgs) -> Result<Option<ContainerApis>> {
    if args.no_container_api {
        return Ok(None);
    }
    ContainerApis::start(api_sockets(args)).map(Some)
}

/// `--pod`: each pod's UID, as given or asked of the runtimes by name.
fn pod_uids(args: &RunArgs) -> Result<Vec<String>> {
    let mut uids = Vec::new();
    for pod in &args.pods {
        match pod {
            PodRef::Uid(uid) => uids.push(uid.clone()),
            PodRef::Name { namespace, name } => {
                let sockets = api_sockets(args);
                if sockets.is_empty() {
                    bail!(
                        "--pod {namespace}/{name} is found through a container runtime's API, which --no-container-api turns off; give the pod's UID instead"
                    );
                }
                uids.extend(crate::output::container_api::pod_uids(
                    &sockets, namespace, name,
                )?);
            }
        }
    }
    Ok(uids)
}

/// The pipeline thread, started on the tables and output, with the running processes'
/// seeds as its first items.
fn start_pipeline(
    ebpf: &mut aya::Ebpf,
    args: &RunArgs,
    table: RegionTable,
    unwind_tables: SharedTables,
    writer: JsonWriter,
    (seeds, scope_cgroups): (Vec<Item>, Option<ScopeCgroups>),
    region_events: bool,
) -> Result<StartedPipeline> {
    let clock = writer.clock();
    let output_closed = writer.closed.clone();
    let (drain_requests, flush_requests) = tokio::sync::mpsc::unbounded_channel();
    let (pipeline, pipeline_thread) = pipeline::start(
        table,
        Options {
            filter: region_filter(args),
            every_event: args.every_event,
            max_stack_depth: usize::from(args.max_stack_depth),
            unwind_tables: Some(unwind_tables),
            kernel_tallies: Some(KernelTallies::new(
                HashMap::try_from(take_map(ebpf, map_names::FAULT_TALLIES)?)?,
                Array::try_from(take_map(ebpf, map_names::TALLY_EPOCH)?)?,
            )),
            rearm_rounds: args
                .rearm_interval
                .map(|_| RearmRounds::new(args.rearm_budget)),
            region_events,
            unsynced_after: args.unsynced_after,
            scope_cgroups,
            debuginfod: match args.debuginfod.config() {
                Some(config) => crate::stacks::debuginfod::Debuginfod::start(config)?,
                None => None,
            },
            debug_file_wait: args.debuginfod.debuginfod_wait,
            container_apis: container_apis(args)?,
        },
        clock,
        writer,
        pipeline::FlushBarrier {
            drain: drain_requests,
        },
    )?;
    if !seeds.is_empty() {
        pipeline
            .send(Message::Items(seeds))
            .context("the pipeline stopped")?;
    }
    Ok((pipeline, pipeline_thread, flush_requests, output_closed))
}

/// `run`'s side of the read loop: records go to the pipeline thread.
struct RunReader<'a> {
    /// Owned so they can be detached before the final drain.
    programs: Option<aya::Ebpf>,
    /// /proc/PID/maps snapshots, seeded with the processes running at start.
    snapshots: Snapshots,
    mounts: MountPoints,
    /// Built here as executable mappings arrive (`SharedTables`).
    unwind_tables: SharedTables,
    counters: &'a PerCpuArray<MapData, u64>,
    pipeline: &'a SyncSender<Message>,
    /// `None` in every-event mode without `--rearm-interval` (which sets it).
    flush_tick: Option<tokio::time::Interval>,
    kernel_logger: Option<&'a mut KernelLogger>,
    /// Set by the writer when the output fails.
    output_closed: &'a OnceLock<String>,
    /// `RINGBUF_HIGH_WATER`, read and reset per stats interval for the metrics.
    high_water: Array<MapData, u64>,
    /// The pipeline's requests for a drain before a flush (`pipeline::FlushBarrier`).
    flush_requests: UnboundedReceiver<u64>,
    /// `--unsynced-after`: when the pipeline last checked unsynced pages' ages.
    unsynced_checked: Option<Instant>,
}

/// How often `--unsynced-after` ages are checked (the check walks every process's
/// unsynced pages).
const UNSYNCED_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// `run`'s own wake-ups.
enum RunWakeup {
    /// The flush interval passed.
    Flush,
    /// The pipeline reports interval `closing` once every record before it is delivered.
    DrainBeforeFlush(u64),
}

impl RunReader<'_> {
    /// A flush tick, whose first tick is now.
    fn flush_tick(interval: Option<Duration>) -> Option<tokio::time::Interval> {
        let mut tick = tokio::time::interval(interval?);
        // Ticks missed while the loop was busy are not made up in a burst: each would
        // be a round of its own, too short to mean anything.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        Some(tick)
    }
}

impl Reader for RunReader<'_> {
    type Wakeup = RunWakeup;

    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> bool {
        ringbuf_reader::drain(
            ring,
            &mut self.snapshots,
            &mut self.mounts,
            &self.unwind_tables,
            self.pipeline,
        )
    }

    fn tick(&mut self) -> bool {
        if let Some(logger) = self.kernel_logger.as_deref_mut() {
            logger.flush();
        }
        if let Some(checked) = &mut self.unsynced_checked
            && checked.elapsed() >= UNSYNCED_CHECK_INTERVAL
        {
            *checked = Instant::now();
            if self.pipeline.send(Message::CheckUnsynced).is_err() {
                return false;
            }
        }
        self.output_closed.get().is_none()
    }

    fn stats(&mut self) -> Result<bool> {
        if let Some(metrics) = metrics::get() {
            let bytes = self.high_water.get(&0, 0).unwrap_or(0);
            if let Err(err) = self.high_water.set(0, 0, 0) {
                log::debug!("resetting the ring buffer high-water mark failed: {err}");
            }
            metrics.ringbuf_high_water(bytes);
        }
        let kernel = stats::read_kernel(self.counters)?;
        Ok(self.pipeline.send(Message::Stats(kernel)).is_ok())
    }

    fn reopen_output(&mut self) -> bool {
        self.pipeline.send(Message::ReopenOutput).is_ok()
    }

    async fn wakeup(&mut self) -> RunWakeup {
        let flush = async {
            match &mut self.flush_tick {
                Some(tick) => tick.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = flush => RunWakeup::Flush,
            Some(closing) = self.flush_requests.recv() => RunWakeup::DrainBeforeFlush(closing),
        }
    }

    fn on_wakeup(&mut self, wakeup: RunWakeup, ring: &mut RingBuf<MapData>) -> bool {
        match wakeup {
            RunWakeup::Flush => self.pipeline.send(Message::Flush).is_ok(),
            // Every record of the closing interval goes ahead of its report: an
            // interval's first fault on each tally is a record, and the report folds
            // the tally's counts into the aggregate that record opened.
            RunWakeup::DrainBeforeFlush(closing) => {
                self.drain(ring) && self.pipeline.send(Message::FlushReady { closing }).is_ok()
            }
        }
    }

    fn detach(&mut self) {
        self.programs = None;
    }
}
