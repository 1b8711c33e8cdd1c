//! The fault hook, chosen at start-up: the first that attaches of raw tracepoint (47 ns
//! per fault for an empty program here), tp_btf (82 ns), perf tracepoint (140 ns) on
//! `exceptions:page_fault_{user,kernel}`, then fentry on `handle_mm_fault` (any
//! architecture; needs ftrace direct calls and no lockdown), then a kprobe on it (needs
//! CONFIG_KPROBES), then the perf software event page-faults
//! (any architecture; cannot tell writes from reads). `--fault-hook` forces one.

use anyhow::{Context, Result, anyhow, bail};
use aya::{
    Btf, Ebpf,
    programs::{
        BtfTracePoint, FEntry, KProbe, PerfEvent, Program, TracePoint,
        perf_event::{PerfEventConfig, PerfEventScope, SamplePolicy, SoftwareEvent},
    },
};
use clap::ValueEnum;

use crate::kernel::programs::{AttachedHook, attach_raw, program};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultHook {
    /// The first of the others, in this order, that attaches.
    Auto,
    RawTracepoint,
    TpBtf,
    Tracepoint,
    Fentry,
    Kprobe,
    /// The perf software event page-faults: any architecture, but no error code
    /// (reads of writable pages are reported too; error_code is null).
    PerfEvent,
}

/// Auto's order: cheapest measured first.
const PREFERENCE: [FaultHook; 5] = [
    FaultHook::RawTracepoint,
    FaultHook::TpBtf,
    FaultHook::Tracepoint,
    FaultHook::Fentry,
    FaultHook::Kprobe,
];

impl FaultHook {
    fn name(self) -> &'static str {
        match self {
            FaultHook::Auto => "auto",
            FaultHook::RawTracepoint => "raw-tracepoint",
            FaultHook::TpBtf => "tp-btf",
            FaultHook::Tracepoint => "tracepoint",
            FaultHook::Fentry => "fentry",
            FaultHook::Kprobe => "kprobe",
            FaultHook::PerfEvent => "perf-event",
        }
    }

    /// (role, attach point) for `agent_started`.
    fn points(self) -> Vec<(&'static str, &'static str)> {
        match self {
            FaultHook::Auto => Vec::new(),
            FaultHook::RawTracepoint => vec![
                ("fault_user", "raw_tracepoint:exceptions:page_fault_user"),
                (
                    "fault_kernel",
                    "raw_tracepoint:exceptions:page_fault_kernel",
                ),
            ],
            FaultHook::TpBtf => vec![
                ("fault_user", "tp_btf:page_fault_user"),
                ("fault_kernel", "tp_btf:page_fault_kernel"),
            ],
            FaultHook::Tracepoint => vec![
                ("fault_user", "tracepoint:exceptions:page_fault_user"),
                ("fault_kernel", "tracepoint:exceptions:page_fault_kernel"),
            ],
            FaultHook::Fentry => vec![
                ("fault_user", "fentry:handle_mm_fault"),
                ("fault_kernel", "fentry:handle_mm_fault"),
            ],
            FaultHook::Kprobe => vec![
                ("fault_user", "kprobe:handle_mm_fault"),
                ("fault_kernel", "kprobe:handle_mm_fault"),
            ],
            FaultHook::PerfEvent => vec![
                ("fault_user", "perf_event:software:page-faults"),
                ("fault_kernel", "perf_event:software:page-faults"),
            ],
        }
    }
}

/// Attaches the fault hook: `choice`, or under `Auto` the first of `PREFERENCE` that
/// attaches (the reasons the better ones did not go into `agent_started`).
pub fn attach(ebpf: &mut Ebpf, choice: FaultHook) -> Result<Vec<AttachedHook>> {
    if choice != FaultHook::Auto {
        attach_one(ebpf, choice).with_context(|| {
            format!(
                "the fault hook {} cannot attach on this kernel; `map-audit check` lists what can",
                choice.name()
            )
        })?;
        return Ok(described(choice, "forced with --fault-hook".into()));
    }
    let mut skipped = Vec::new();
    for hook in PREFERENCE {
        match attach_one(ebpf, hook) {
            Ok(()) => {
                let mut reason = "first available, cheapest first: raw tracepoint 47 ns, tp_btf 82 ns, tracepoint 140 ns per fault (empty program), then fentry, then kprobe".to_string();
                if !skipped.is_empty() {
                    reason.push_str(&format!("; unavailable: {}", skipped.join("; ")));
                }
                return Ok(described(hook, reason));
            }
            Err(err) => skipped.push(format!("{} ({})", hook.name(), brief(&err))),
        }
    }
    Err(anyhow!(
        "no fault hook attaches on this kernel: {}",
        skipped.join("; ")
    ))
}

/// An attach error without the verifier's log: its first line, and the log's last one
/// (the verdict), so `agent_started` stays one short line (the whole log is in the
/// error of a `--fault-hook` that names the hook).
fn brief(err: &anyhow::Error) -> String {
    let text = format!("{err:#}");
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or_default();
    let first = first.split(" Verifier output:").next().unwrap_or(first);
    match lines.rfind(|l| !l.starts_with(':')) {
        Some(last) if last != first => format!("{first} ... {last}"),
        _ => first.to_string(),
    }
}

fn described(hook: FaultHook, reason: String) -> Vec<AttachedHook> {
    hook.points()
        .into_iter()
        .map(|(role, point)| AttachedHook {
            role,
            hook: point.into(),
            reason: reason.clone(),
        })
        .collect()
}

fn attach_one(ebpf: &mut Ebpf, hook: FaultHook) -> Result<()> {
    match hook {
        FaultHook::Auto => bail!("auto is not a hook"),
        FaultHook::RawTracepoint => {
            attach_raw(ebpf, "page_fault_user", "page_fault_user")?;
            attach_raw(ebpf, "page_fault_kernel", "page_fault_kernel")
                .inspect_err(|_| unload(ebpf, "page_fault_user"))
        }
        FaultHook::TpBtf => {
            let btf = Btf::from_sys_fs().context("reading the kernel's BTF failed")?;
            attach_btf(ebpf, &btf, "page_fault_user_btf", "page_fault_user")?;
            attach_btf(ebpf, &btf, "page_fault_kernel_btf", "page_fault_kernel")
                .inspect_err(|_| unload(ebpf, "page_fault_user_btf"))
        }
        FaultHook::Tracepoint => {
            attach_tracepoint(ebpf, "page_fault_user_tp", "page_fault_user")?;
            attach_tracepoint(ebpf, "page_fault_kernel_tp", "page_fault_kernel")
                .inspect_err(|_| unload(ebpf, "page_fault_user_tp"))
        }
        FaultHook::PerfEvent => {
            attach_perf_event(ebpf).inspect_err(|_| unload(ebpf, "page_faults_perf_event"))
        }
        FaultHook::Fentry => {
            let btf = Btf::from_sys_fs().context("reading the kernel's BTF failed")?;
            let program: &mut FEntry = program(ebpf, "handle_mm_fault_fentry")?.try_into()?;
            program
                .load("handle_mm_fault", &btf)
                .context("the kernel rejected the fentry program")?;
            program.attach().context(
                "attaching fentry to handle_mm_fault failed (kernels without ftrace direct calls, or under lockdown, cannot)",
            )?;
            Ok(())
        }
        FaultHook::Kprobe => {
            let program: &mut KProbe = program(ebpf, "handle_mm_fault")?.try_into()?;
            program
                .load()
                .context("the kernel rejected the kprobe program")?;
            program.attach("handle_mm_fault", 0).context(
                "attaching a kprobe to handle_mm_fault failed (kernels without CONFIG_KPROBES cannot)",
            )?;
            Ok(())
        }
    }
}

/// One perf event per CPU, sampling every page fault of every process.
fn attach_perf_event(ebpf: &mut Ebpf) -> Result<()> {
    let program: &mut PerfEvent = program(ebpf, "page_faults_perf_event")?.try_into()?;
    program
        .load()
        .context("the kernel rejected the perf_event program")?;
    let cpus =
        aya::util::online_cpus().map_err(|(what, err)| anyhow!("reading {what} failed: {err}"))?;
    for cpu in cpus {
        program
            .attach(
                PerfEventConfig::Software(SoftwareEvent::PageFaults),
                PerfEventScope::AllProcessesOneCpu { cpu },
                SamplePolicy::Period(1),
                true,
            )
            .with_context(|| format!("opening the page-faults perf event on CPU {cpu} failed"))?;
    }
    Ok(())
}

fn attach_btf(ebpf: &mut Ebpf, btf: &Btf, name: &str, point: &str) -> Result<()> {
    let program: &mut BtfTracePoint = program(ebpf, name)?.try_into()?;
    program
        .load(point, btf)
        .with_context(|| format!("the kernel rejected the tp_btf program for {point}"))?;
    program
        .attach()
        .with_context(|| format!("attaching tp_btf to {point} failed"))?;
    Ok(())
}

fn attach_tracepoint(ebpf: &mut Ebpf, name: &str, point: &str) -> Result<()> {
    let program: &mut TracePoint = program(ebpf, name)?.try_into()?;
    program
        .load()
        .with_context(|| format!("the kernel rejected the tracepoint program for {point}"))?;
    program
        .attach("exceptions", point)
        .with_context(|| format!("attaching to tracepoint exceptions:{point} failed"))?;
    Ok(())
}

/// Detaches and unloads a program that half of a hook pair attached.
fn unload(ebpf: &mut Ebpf, name: &str) {
    let unloaded = match ebpf.program_mut(name) {
        Some(Program::RawTracePoint(p)) => p.unload(),
        Some(Program::BtfTracePoint(p)) => p.unload(),
        Some(Program::TracePoint(p)) => p.unload(),
        Some(Program::PerfEvent(p)) => p.unload(),
        _ => Ok(()),
    };
    // Left attached, it is detached when the agent exits.
    if let Err(err) = unloaded {
        log::warn!("unloading {name} after a failed attach failed: {err}");
    }
}
