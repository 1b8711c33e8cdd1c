//! `map-audit go-maps`: checks the program is Go, attaches the uprobes for its one
//! process, and turns records into events until the process ends, `--duration`
//! passes, or a signal; then prints the final `go_maps_stopped` counts.

use std::{collections::HashMap, path::PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use map_audit_common::go_maps::{GoConfig, GoCrashRecord};
use map_audit_common::map_names;
use object::{Object, ObjectSection};

use super::{
    counters::{self as go_counters, GoCounters, GoKernelCounters},
    crash_threads,
    events::{CrashThread, GoEvent, Program, RuntimeCrash, Started, Stats},
    go_binary::GoBinary,
    go_symbols::GoSymbols,
    goid_offset,
    hooks::{Hooks, Mode},
    load,
    pclntab::FunctionTable,
    race_reports::RaceReports,
    records::{self, GoRecord},
    stack_switch::{self, SwitchLayout},
};
use crate::{
    commands::cli::{GoMapsArgs, OutputFormat},
    commands::read_loop::{Reader, StopWhen, read_until_stopped},
    commands::signals::runtime_with_signals,
    kernel::kernel_support,
    kernel::{loader::raise_memlock_limit, programs::take_map},
    output::clock::Clock,
    output::events::Body,
    output::json_writer::JsonWriter,
    proc::target::{self, HeldCommand},
};

pub fn run(args: GoMapsArgs) -> Result<i32> {
    let (pid, path, shown) = match (args.pid, args.command.first()) {
        (Some(_), Some(_)) => bail!("give either --pid PID or -- COMMAND, not both"),
        (None, None) => bail!("nothing to audit: give --pid PID or -- COMMAND [ARGS]"),
        (Some(pid), None) => {
            target::check_pids(&[pid])?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                .with_context(|| format!("cannot see pid {pid}'s program"))?;
            (
                Some(pid),
                PathBuf::from(format!("/proc/{pid}/exe")),
                format!("pid {pid}'s program {}", exe.display()),
            )
        }
        (None, Some(name)) => {
            let path = target::program_path(name)?;
            let shown = path.display().to_string();
            (None, path, shown)
        }
    };
    kernel_support::require_run_prerequisites()?;
    let binary = GoBinary::open(&path, &shown)?;
    if binary.info.goarch != "amd64" {
        bail!(
            "{shown} is a GOARCH={} build; go-maps reads amd64 registers only",
            binary.info.goarch
        );
    }
    let functions = {
        let elf = binary.elf();
        // PIE builds keep it in RELRO, as .data.rel.ro.gopclntab.
        let section = elf
            .section_by_name(".gopclntab")
            .or_else(|| elf.section_by_name(".data.rel.ro.gopclntab"))
            .ok_or_else(|| {
                anyhow!("{shown} has no .gopclntab section, so go-maps cannot find its functions")
            })?;
        let text = elf.section_by_name(".text").map_or(0, |s| s.address());
        FunctionTable::parse(section.data()?, text)
            .with_context(|| format!("reading the function table of {shown} failed"))?
    };
    let mode = if args.crash_only {
        Mode::CrashOnly
    } else {
        Mode::Exact
    };
    let hooks = Hooks::find(&binary, &functions, mode)?;
    let goid = goid_offset::find(&binary)?;
    raise_memlock_limit();

    let held = if args.command.is_empty() {
        None
    } else {
        Some(HeldCommand::spawn(&args.command)?)
    };
    let pid = pid
        .or(held.as_ref().map(|h| h.pid))
        .expect("a pid or a command");
    let mut ebpf = load::load(
        &GoConfig {
            tgid: pid,
            goid_offset: goid.offset,
            ttl_ns: args.ttl.as_nanos() as u64,
        },
        args.ringbuf_size,
    )?;
    let uprobes = hooks.attach(&mut ebpf, &binary, &path, pid)?;
    // Before `go_maps_started`: a SIGTERM right after it still ends with the final stats.
    let (runtime, signals) = runtime_with_signals()?;

    let clock = Clock::new();
    let mut writer = JsonWriter::open(args.output.as_deref(), clock)?;
    writer.pretty = args.format == OutputFormat::Pretty;
    let program = Program {
        pid,
        exe: binary.path.display().to_string(),
        go_version: binary.info.go_version.clone(),
        build_id: binary.build_id.clone(),
        experiments: binary.info.experiments.clone(),
        stripped: binary.stripped,
    };
    writer.write(
        None,
        Body::from(GoEvent::Started(Started {
            version: env!("CARGO_PKG_VERSION"),
            kernel_release: kernel_support::kernel_release(),
            program,
            command: (!args.command.is_empty()).then(|| args.command.clone()),
            mode,
            goid_offset: goid.offset,
            goid_offset_source: goid.source,
            hooks: hooks.list.clone(),
            uprobes,
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

    let symbols = GoSymbols::new(functions, &binary.path.display().to_string(), pid);
    let reports = RaceReports::new(symbols, hooks, binary.info.go_version.clone(), clock);
    let counters = PerCpuArray::try_from(take_map(&mut ebpf, map_names::GO_COUNTERS)?)?;
    let ring = RingBuf::try_from(take_map(&mut ebpf, map_names::EVENTS)?)?;

    let stop = StopWhen {
        pid_gone: held.is_none().then_some(pid),
        command: held,
        duration: args.duration,
    };
    let mut session = Session {
        programs: Some(ebpf),
        counters,
        reports,
        writer,
        goid_offset: goid.offset,
        switch_layout: stack_switch::find(&binary),
        captures: HashMap::new(),
    };
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

/// Go mode's side of the read loop: records become events in this thread.
struct Session {
    /// Owned so they can be detached before the final drain.
    programs: Option<aya::Ebpf>,
    counters: PerCpuArray<MapData, u64>,
    reports: RaceReports,
    writer: JsonWriter,
    /// Of `goid` in `runtime.g`: names the goroutine of each thread of a crash.
    goid_offset: u32,
    /// Where a thread on `g0` finds the goroutine that switched to it (crash walks).
    switch_layout: Option<SwitchLayout>,
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
        match crash_threads::read(
            &mut self.reports,
            crash,
            self.goid_offset,
            self.switch_layout.as_ref(),
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

    fn write_records(&mut self, ring: &mut RingBuf<MapData>) {
        let mut wrote = false;
        while let Some(bytes) = ring.next() {
            let record = records::decode(&bytes);
            drop(bytes);
            let (ts_ns, event) = match record {
                Ok(GoRecord::Race(race)) => match self.reports.race(&race) {
                    Some(event) => (race.header.ts_ns, GoEvent::ConcurrentWrite(event)),
                    None => continue,
                },
                Ok(GoRecord::Crash(crash)) => {
                    let mut event = self.reports.crash(&crash);
                    let threads = if self.reports.mode() == Mode::CrashOnly {
                        self.read_threads(&crash, &mut event)
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
                    wrote = true;
                    continue;
                }
                Err(err) => {
                    self.reports.counters.records_undecodable += 1;
                    log::warn!("{err}");
                    continue;
                }
            };
            self.writer.write(Some(ts_ns), Body::from(event));
            wrote = true;
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
        let suppressed = self.reports.take_suppressed();
        self.writer.write(
            None,
            Body::from(GoEvent::Stats(Stats {
                final_totals,
                counters: GoCounters {
                    kernel,
                    agent: self.reports.counters,
                },
                suppressed,
                command_exit_code,
            })),
        );
        self.writer.flush();
    }
}
