//! `map-audit check`: what this kernel offers for each hook the agent can use, and
//! which hooks a run would pick. Exits non-zero when a run could not work here.

use aya::{programs::ProgramType, sys::is_program_supported};
use std::path::Path;

use crate::kernel::{
    feature_probes::{self, ProgramObject},
    kernel_support, tracefs,
};

struct Probe {
    what: String,
    ok: bool,
    detail: String,
}

impl Probe {
    /// A check whose detail is `yes` or `no` depending on the result.
    fn new(what: impl Into<String>, ok: bool, yes: &str, no: &str) -> Self {
        Self {
            what: what.into(),
            ok,
            detail: if ok { yes } else { no }.into(),
        }
    }
}

fn program_type(kind: ProgramType) -> (bool, String) {
    match is_program_supported(kind) {
        Ok(true) => (true, "the kernel loads this program type".into()),
        Ok(false) => (false, "the kernel refuses this program type".into()),
        Err(err) => (false, format!("probe failed: {err}")),
    }
}

/// What the checks found that decides whether and how `map-audit run` works.
struct Findings {
    probes: Vec<Probe>,
    privileged: bool,
    btf: bool,
    features_present: bool,
    needed_tracepoints: bool,
    page_fault_tracepoint: bool,
    tracepoint_programs: bool,
    raw_tracepoint_programs: bool,
    kprobe_events: bool,
    perf_fallback: bool,
}

/// Prints the report; returns the exit code (0 when `map-audit run` can work here).
pub fn run() -> i32 {
    let findings = probe();
    for probe in &findings.probes {
        println!(
            "{:<4} {:<60} {}",
            if probe.ok { "yes" } else { "no" },
            probe.what,
            probe.detail
        );
    }
    print_plan(&findings);
    print_debug_sources();
    let fault_hook = findings.page_fault_tracepoint && findings.raw_tracepoint_programs;
    let can_run = findings.privileged
        && findings.btf
        && findings.features_present
        && findings.needed_tracepoints
        && findings.tracepoint_programs
        && (fault_hook || findings.kprobe_events || findings.perf_fallback);
    if can_run {
        println!("\nmap-audit can run on this kernel.");
        0
    } else {
        println!("\nmap-audit cannot run here: see the `no` lines above.");
        1
    }
}

/// Runs every check.
fn probe() -> Findings {
    let mut probes = Vec::new();
    let privileged = kernel_support::has_bpf_privileges();
    probes.push(Probe::new(
        "privileges (root, or CAP_BPF + CAP_PERFMON)",
        privileged,
        "present",
        "missing: run with sudo",
    ));
    let btf = kernel_support::has_btf();
    probes.push(Probe::new(
        "BTF (/sys/kernel/btf/vmlinux)",
        btf,
        "present",
        "missing: needs CONFIG_DEBUG_INFO_BTF=y",
    ));
    // Optional: only `--rearm-interval` needs it.
    probes.push(Probe::new(
        "soft-dirty bits (--rearm-interval)",
        kernel_support::has_soft_dirty(),
        "present: re-arm rounds are available",
        "missing: needs CONFIG_MEM_SOFT_DIRTY; runs work without --rearm-interval",
    ));
    let tracefs = tracefs::root();
    probes.push(Probe {
        what: "tracefs".into(),
        ok: tracefs.is_ok(),
        detail: match &tracefs {
            Ok(root) => format!("mounted at {}", root.display()),
            Err(err) => format!("{err:#}"),
        },
    });
    let tracepoint = |category: &str, name: &str| -> bool {
        tracefs
            .as_ref()
            .is_ok_and(|root| tracefs::tracepoint_exists(root, category, name))
    };
    let mut needed_tracepoints = true;
    for (category, name) in [
        ("syscalls", "sys_enter_mmap"),
        ("syscalls", "sys_exit_mmap"),
        ("syscalls", "sys_enter_munmap"),
        ("syscalls", "sys_exit_munmap"),
        ("syscalls", "sys_enter_msync"),
        ("syscalls", "sys_exit_msync"),
        ("sched", "sched_process_fork"),
        ("sched", "sched_process_exit"),
        ("exceptions", "page_fault_user"),
        ("exceptions", "page_fault_kernel"),
    ] {
        let ok = tracepoint(category, name);
        needed_tracepoints &= ok || name == "page_fault_kernel";
        probes.push(Probe::new(
            format!("tracepoint {category}:{name}"),
            ok,
            "present",
            "missing",
        ));
    }
    // Probed only with the privileges to load programs: without, every probe fails.
    let features = if privileged {
        feature_probes::probe()
    } else {
        Vec::new()
    };
    for feature in &features {
        probes.push(Probe {
            what: format!("kernel feature: {} (Linux {})", feature.name, feature.since),
            ok: feature.present != Some(false) || feature.older_object_avoids,
            detail: match feature.present {
                Some(true) => "present".into(),
                Some(false) if feature.older_object_avoids => {
                    "missing: the object for older kernels runs instead".into()
                }
                Some(false) => "missing: map-audit's programs use it".into(),
                None => "probe failed (see RUST_LOG=debug); not held against the kernel".into(),
            },
        });
    }
    let object = feature_probes::choose(&kernel_support::kernel_release(), &features);
    if privileged {
        probes.push(Probe {
            what: "eBPF object".into(),
            ok: object.is_ok(),
            detail: match object {
                Ok(ProgramObject::Linux5_17) => "the one for Linux 5.17+".into(),
                Ok(older) => format!(
                    "the one for older kernels (5.10 to 5.16): {}",
                    older.degraded().join("; ")
                ),
                Err(_) => "none: this kernel lacks what both need".into(),
            },
        });
    }
    let features_present = object.is_ok();
    let mut supported = |what: &str, kind| {
        let (ok, detail) = program_type(kind);
        probes.push(Probe {
            what: what.into(),
            ok,
            detail,
        });
        ok
    };
    let tracepoint_programs = supported("tracepoint programs", ProgramType::TracePoint);
    let raw_tracepoint_programs = supported("raw tracepoint programs", ProgramType::RawTracePoint);
    supported(
        "BTF tracing programs (tp_btf, fentry)",
        ProgramType::Tracing,
    );
    supported("kprobe programs", ProgramType::KProbe);
    supported("perf_event programs", ProgramType::PerfEvent);
    let kprobe_events = tracefs
        .as_ref()
        .is_ok_and(|root| root.join("kprobe_events").exists());
    probes.push(Probe::new(
        "kprobe attach (kprobe_events)",
        kprobe_events,
        "present",
        "missing: kernel built without CONFIG_KPROBES",
    ));
    let perf_fallback = perf_page_faults_available();
    probes.push(Probe {
        what: "perf software event page-faults".into(),
        ok: perf_fallback,
        detail: "perf_event_open(PERF_COUNT_SW_PAGE_FAULTS) on this process".into(),
    });
    Findings {
        probes,
        privileged,
        btf,
        features_present,
        needed_tracepoints,
        page_fault_tracepoint: tracepoint("exceptions", "page_fault_user"),
        tracepoint_programs,
        raw_tracepoint_programs,
        kprobe_events,
        perf_fallback,
    }
}

/// Which hooks and unwinding a run would use.
fn print_plan(findings: &Findings) {
    println!();
    println!("map-audit run would use:");
    println!(
        "  mmap/munmap/fork/exit: tracepoints (syscalls:sys_*_mmap, sys_*_munmap, sched:sched_process_*)"
    );
    let chosen = if findings.page_fault_tracepoint && findings.raw_tracepoint_programs {
        "raw_tracepoint:exceptions:page_fault_{user,kernel} (cheapest measured)"
    } else if findings.kprobe_events {
        "kprobe:handle_mm_fault (no usable exceptions:page_fault_* tracepoints)"
    } else if findings.perf_fallback {
        "perf_event:software:page-faults (last resort: no error code, reads of writable pages included)"
    } else {
        "none available"
    };
    println!("  write faults:          {chosen}");
    println!(
        "  (order: raw-tracepoint, tp-btf, tracepoint, fentry, kprobe, perf-event; --fault-hook forces one)"
    );
    println!(
        "  user stacks:           unwound from each file's DWARF CFI (.eh_frame), frame pointers where a file has none"
    );
    println!(
        "  (--unwind auto (default), cfi: stop where there is no CFI, frame-pointer: frame pointers only)"
    );
}

/// Where frames of stripped binaries would get names, and whether servers answer.
fn print_debug_sources() {
    use crate::stacks::{debug_lookup::DEBUG_ROOT, debuginfod};
    println!();
    println!("names for stripped binaries (in this order):");
    println!("  the binary itself, then separate debug files:");
    let build_ids = std::fs::read_dir(Path::new(DEBUG_ROOT).join(".build-id"))
        .map(|dirs| {
            dirs.flatten()
                .filter_map(|d| std::fs::read_dir(d.path()).ok())
                .flatten()
                .flatten()
                // Each has a `.debug` file and a link to its binary: count the first.
                .filter(|f| f.path().extension().is_some_and(|e| e == "debug"))
                .count()
        })
        .unwrap_or(0);
    println!(
        "    {DEBUG_ROOT}/.build-id/: {build_ids} debug files; .gnu_debuglink next to the binary, in its .debug/, under {DEBUG_ROOT}/"
    );
    let urls = debuginfod::urls_from_env();
    if urls.is_empty() {
        println!("  debuginfod: no server in DEBUGINFOD_URLS (run --debuginfod URL names one)");
    }
    for url in &urls {
        let answer = debuginfod::probe(url, std::time::Duration::from_secs(3));
        println!(
            "  debuginfod {url} (DEBUGINFOD_URLS): {}",
            answer.unwrap_or_else(|why| why)
        );
    }
    println!(
        "  debuginfod cache: {} (DEBUGINFOD_CACHE_PATH or --debuginfod-cache)",
        debuginfod::default_cache_dir().display()
    );
}

fn perf_page_faults_available() -> bool {
    // perf_event_attr, first version (64 bytes): type, size, config; the rest zero.
    const PERF_TYPE_SOFTWARE: u32 = 1;
    const PERF_COUNT_SW_PAGE_FAULTS: u64 = 2;
    const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
    let mut attr = [0u64; 8];
    attr[0] = u64::from(PERF_TYPE_SOFTWARE) | (64u64 << 32);
    attr[1] = PERF_COUNT_SW_PAGE_FAULTS;
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            0,
            -1,
            -1,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return false;
    }
    unsafe { libc::close(fd as i32) };
    true
}
