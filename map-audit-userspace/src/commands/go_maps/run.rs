//! `map-audit go-maps`: checks the program is Go, attaches the uprobes for its one
//! process, and turns records into events until the process ends, `--duration`
//! passes, or a signal; then prints the final `go_maps_stopped` counts.

use std::{collections::HashMap, num::NonZeroU32, path::PathBuf, sync::Arc};

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    maps::{MapData, PerCpuArray, RingBuf},
    programs::uprobe::UProbeScope,
};
use map_audit_common::go_maps::{GoConfig, GoCrashRecord};
use map_audit_common::map_names;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use super::{
    all_go::AllGo,
    counters::{self as go_counters, GoAgentCounters, GoCounters, GoKernelCounters},
    crash_threads,
    events::{CrashThread, Found, GoEvent, RuntimeCrash, Started, Stats},
    hooks::Mode,
    load,
    program::GoProgram,
    race_reports::RaceReports,
    records::{self, GoRecord},
};
use crate::{
    commands::cli::{GoMapsArgs, OutputFormat},
    commands::read_loop::{Reader, StopWhen, read_until_stopped},
    commands::signals::runtime_with_signals,
    kernel::feature_probes::ProgramObject,
    kernel::kernel_support::{self, NotOnThisKernel},
    kernel::{loader::raise_memlock_limit, programs::take_map},
    output::clock::Clock,
    output::events::Body,
    output::json_writer::JsonWriter,
    proc::target::{self, HeldCommand},
};

pub fn run(args: GoMapsArgs) -> Result<i32> {
    let target = match (args.pid, args.command.first(), args.all_go) {
        (_, _, true) => None,
        (Some(_), Some(_), _) => bail!("give either --pid PID or -- COMMAND, not both"),
        (None, None, _) => {
            bail!("nothing to audit: give --pid PID, -- COMMAND [ARGS] or --all-go")
        }
        (Some(pid), None, _) => {
            target::check_pids(&[pid])?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .with_context(|| format!("cannot see pid {pid}'s program"))?;
            Some((
                Some(pid),
                PathBuf::from(format!("/proc/{pid}/exe")),
                format!("pid {pid}'s program {}", exe.display()),
            ))
        }
        (None, Some(name), _) => {
            let path = target::program_path(name)?;
            let shown = path.display().to_string();
            Some((None, path, shown))
        }
    };
    if kernel_support::require_run_prerequisites()? != ProgramObject::Linux5_17 {
        return Err(NotOnThisKernel(format!(
            "Go mode needs the BPF features of Linux 5.17 (bpf_loop and bpf_get_attach_cookie among them), which this kernel ({}) lacks; `map-audit run` works here, and `map-audit check` lists what is missing",
            kernel_support::kernel_release()
        ))
        .into());
    }
    let mode = if args.crash_only || args.all_go {
        Mode::CrashOnly
    } else {
        Mode::Exact
    };
    let one = match &target {
        Some((pid, path, shown)) => Some((*pid, path, GoProgram::open(path, shown, mode)?)),
        None => None,
    };
    raise_memlock_limit();

    let held = if args.command.is_empty() {
        None
    } else {
        Some(HeldCommand::spawn(&args.command)?)
    };
    let pid = one
        .as_ref()
        .and_then(|(pid, ..)| *pid)
        .or(held.as_ref().map(|h| h.pid));
    let mut ebpf = load::load(
        &GoConfig {
            tgid: pid.unwrap_or(0),
            all_processes: u32::from(args.all_go),
            ttl_ns: args.ttl.as_nanos() as u64,
        },
        args.ringbuf_size,
    )?;
    let (targets, hooked) = match (one, pid) {
        (Some((_, path, (program, binary))), Some(pid)) => {
            let scope = UProbeScope::OneProcess(
                NonZeroU32::new(pid).ok_or_else(|| anyhow!("pid 0 cannot be audited"))?,
            );
            let uprobes = program.attach(&mut ebpf, &binary, path, scope)?;
            let hooked = program.hooked(pid, uprobes);
            (Targets::One(pid, Arc::new(program)), Some(hooked))
        }
        _ => {
            load::attach_exec_records(&mut ebpf)?;
            (Targets::AllGo(AllGo::default()), None)
        }
    };
    // Before `go_maps_started`: a SIGTERM right after it still ends with the final stats.
    let (runtime, signals) = runtime_with_signals()?;

    let clock = Clock::new();
    let mut writer = JsonWriter::open(args.output.as_deref(), clock)?;
    writer.pretty = args.format == OutputFormat::Pretty;
    writer.write(
        None,
        Body::from(GoEvent::Started(Started {
            version: env!("CARGO_PKG_VERSION"),
            kernel_release: kernel_support::kernel_release(),
            program: hooked,
            all_go: args.all_go,
            command: (!args.command.is_empty()).then(|| args.command.clone()),
            mode,
            ttl_ms: args.ttl.as_millis() as u64,
            cost_note: match mode {
                Mode::Exact => {
                    "each map write of this process takes two uprobe hits (~10-14 us each here): a diagnostic mode"
                }
                Mode::CrashOnly => {
                    "nothing until the process reaches a fatal path; then it is held for milliseconds while its threads are read"
                }
            },
        })),
    );
    writer.flush();

    let counters = PerCpuArray::try_from(take_map(&mut ebpf, map_names::GO_COUNTERS)?)?;
    let ring = RingBuf::try_from(take_map(&mut ebpf, map_names::EVENTS)?)?;
    let stop = StopWhen {
        pid_gone: held.is_none().then_some(pid).flatten(),
        command: held,
        duration: args.duration,
    };
    let mut session = Session {
        programs: Some(ebpf),
        counters,
        targets,
        mode,
        clock,
        reports: HashMap::new(),
        agent: GoAgentCounters::default(),
        writer,
        captures: HashMap::new(),
    };
    session.scan();
    let exit_code = runtime.block_on(read_until_stopped(
        ring,
        &mut session,
        signals,
        stop,
        Some(args.stats_interval),
    ))?;
    let kernel = go_counters::read_kernel(&session.counters)?;
    session.write_stats(kernel, true, exit_code);
    if let Some(reason) = session.writer.closed.get() {
        bail!("the output failed ({reason}), so the agent stopped");
    }
    Ok(exit_code.unwrap_or(0))
}

/// What is audited: one process, or every Go program (`--all-go`).
enum Targets {
    One(u32, Arc<GoProgram>),
    AllGo(AllGo),
}

/// Go mode's side of the read loop: records become events in this thread.
struct Session {
    /// Owned so they can be detached before the final drain (and, with `--all-go`,
    /// so programs exec'd meanwhile get their uprobes).
    programs: Option<aya::Ebpf>,
    counters: PerCpuArray<MapData, u64>,
    targets: Targets,
    mode: Mode,
    clock: Clock,
    /// By pid: its records' names and counts (dropped, counts kept, once it is gone).
    reports: HashMap<u32, RaceReports>,
    /// The session's own counts, and those of processes gone.
    agent: GoAgentCounters,
    writer: JsonWriter,
    /// By pid, the last capture: when it let the process go, and for which thread.
    captures: HashMap<u32, (u64, u32)>,
}

impl Reader for Session {
    type Wakeup = std::convert::Infallible;

    fn drain(&mut self, ring: &mut RingBuf<MapData>) -> bool {
        self.write_records(ring);
        true
    }

    fn tick(&mut self) -> bool {
        self.writer.closed.get().is_none()
    }

    fn stats(&mut self) -> Result<bool> {
        self.forget_gone();
        self.scan();
        let kernel = go_counters::read_kernel(&self.counters)?;
        self.write_stats(kernel, false, None);
        Ok(true)
    }

    fn reopen_output(&mut self) -> bool {
        self.writer.reopen();
        true
    }

    async fn wakeup(&mut self) -> Self::Wakeup {
        std::future::pending().await
    }

    fn on_wakeup(&mut self, wakeup: Self::Wakeup, _: &mut RingBuf<MapData>) -> bool {
        match wakeup {}
    }

    fn detach(&mut self) {
        self.programs = None;
    }
}

impl Session {
    /// `--all-go`: the Go programs running now (at the start, then each stats interval:
    /// programs whose exec record was lost are hooked late, not never).
    fn scan(&mut self) {
        let (Targets::AllGo(all_go), Some(ebpf)) = (&mut self.targets, self.programs.as_mut())
        else {
            return;
        };
        for event in all_go.scan(ebpf, &mut self.agent) {
            self.writer.write(None, Body::from(event));
        }
        self.writer.flush();
    }

    /// `--all-go`: a process exec'd; its program gets hooked if it is new and Go.
    fn exec(&mut self, pid: u32, ts_ns: u64) {
        let (Targets::AllGo(all_go), Some(ebpf)) = (&mut self.targets, self.programs.as_mut())
        else {
            return;
        };
        if let Some(event) = all_go.look(ebpf, pid, Found::Exec, &mut self.agent) {
            self.writer.write(Some(ts_ns), Body::from(event));
            self.writer.flush();
        }
    }

    /// The reports of process `pid`, made at its first record.
    fn reports_for(&mut self, pid: u32) -> Option<&mut RaceReports> {
        if !self.reports.contains_key(&pid) {
            let program = self.program_of(pid)?;
            self.reports.insert(pid, program.reports(pid, self.clock));
        }
        self.reports.get_mut(&pid)
    }

    /// The program process `pid` runs, when it is audited.
    fn program_of(&self, pid: u32) -> Option<Arc<GoProgram>> {
        match &self.targets {
            Targets::One(audited, program) => (*audited == pid).then(|| program.clone()),
            Targets::AllGo(all_go) => all_go.program_of(pid),
        }
    }

    /// Drops the reports of processes gone, keeping their counts.
    fn forget_gone(&mut self) {
        let agent = &mut self.agent;
        self.reports.retain(|pid, reports| {
            let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
            if !alive {
                agent.add(&reports.counters);
            }
            alive
        });
    }

    /// `--crash-only`: every thread of the crashed process, read while it waits
    /// stopped (one `go_crash_thread` event each, after the crash's). A second thread
    /// reaching a fatal path before the first capture let the process go had its stop
    /// ended by that capture, which holds its thread too.
    fn read_threads(
        &mut self,
        crash: &GoCrashRecord,
        event: &mut RuntimeCrash,
    ) -> Vec<CrashThread> {
        let pid = crash.header.tgid;
        if let Some(&(resumed_ns, tid)) = self.captures.get(&pid)
            && crash.header.ts_ns <= resumed_ns
        {
            event.threads_error = Some(format!(
                "its stop joined the one of thread {tid}, whose go_crash_thread events list every thread"
            ));
            return Vec::new();
        }
        let (Some(program), Some(reports)) = (self.program_of(pid), self.reports.get_mut(&pid))
        else {
            return Vec::new();
        };
        match crash_threads::read(
            reports,
            crash,
            program.goid.offset,
            program.switch_layout.as_ref(),
        ) {
            Ok((threads, resumed_ns)) => {
                self.captures.insert(pid, (resumed_ns, crash.writer.tid));
                event.threads_captured = Some(threads.len() as u32);
                threads
            }
            Err(err) => {
                event.threads_error = Some(format!("{err:#}"));
                Vec::new()
            }
        }
    }

    /// A crash of a process whose program cannot be read back (gone already, or
    /// replaced): counted, and the process let go if the crash hook stopped it.
    fn crash_without_program(&mut self, crash: &GoCrashRecord) {
        self.agent.crashes_without_program += 1;
        let pid = crash.header.tgid;
        log::warn!("a crash of pid {pid} came from a program the agent cannot read back");
        if crash.stopped != 0 {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        }
    }

    fn write_crash(&mut self, crash: &GoCrashRecord) {
        let pid = crash.header.tgid;
        let Some(reports) = self.reports_for(pid) else {
            self.crash_without_program(crash);
            return;
        };
        let mut event = reports.crash(crash);
        let threads = if self.mode == Mode::CrashOnly {
            self.read_threads(crash, &mut event)
        } else {
            Vec::new()
        };
        let ts = crash.header.ts_ns;
        self.writer
            .write(Some(ts), Body::from(GoEvent::Crash(event)));
        for thread in threads {
            self.writer
                .write(Some(ts), Body::from(GoEvent::CrashThread(thread)));
        }
    }

    fn write_records(&mut self, ring: &mut RingBuf<MapData>) {
        let mut wrote = false;
        while let Some(bytes) = ring.next() {
            let record = records::decode(&bytes);
            drop(bytes);
            match record {
                Ok(GoRecord::Race(race)) => {
                    let event = self
                        .reports_for(race.header.tgid)
                        .and_then(|reports| reports.race(&race));
                    if let Some(event) = event {
                        self.writer.write(
                            Some(race.header.ts_ns),
                            Body::from(GoEvent::ConcurrentWrite(event)),
                        );
                        wrote = true;
                    }
                }
                Ok(GoRecord::Crash(crash)) => {
                    self.write_crash(&crash);
                    wrote = true;
                }
                Ok(GoRecord::Exec(header)) => self.exec(header.tgid, header.ts_ns),
                Err(err) => {
                    self.agent.records_undecodable += 1;
                    log::warn!("{err}");
                }
            }
        }
        if wrote {
            // A race is often the process's last act: out now, not at the next flush.
            self.writer.flush();
        }
    }

    fn write_stats(
        &mut self,
        kernel: GoKernelCounters,
        final_totals: bool,
        command_exit_code: Option<i32>,
    ) {
        let mut agent = self.agent;
        let mut suppressed = Vec::new();
        for reports in self.reports.values_mut() {
            agent.add(&reports.counters);
            suppressed.extend(reports.take_suppressed());
        }
        suppressed.sort_by_key(|s| std::cmp::Reverse(s.count));
        self.writer.write(
            None,
            Body::from(GoEvent::Stats(Stats {
                final_totals,
                counters: GoCounters { kernel, agent },
                suppressed,
                command_exit_code,
            })),
        );
        self.writer.flush();
    }
}
