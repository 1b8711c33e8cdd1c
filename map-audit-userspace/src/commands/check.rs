//! `map-audit check`: what this kernel offers for each hook the agent can use, and
//! which hooks a run would pick. Exits non-zero when a run could not work here.

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{is_map_supported, is_program_supported},
};

use crate::{kernel::kernel_support, kernel::tracefs};

struct Probe {
    what: String,
    ok: bool,
    detail: String,
}

fn program_type(kind: ProgramType) -> (bool, String) {
    match is_program_supported(kind) {
        Ok(true) => (true, "the kernel loads this program type".into()),
        Ok(false) => (false, "the kernel refuses this program type".into()),
        Err(err) => (false, format!("probe failed: {err}")),
    }
}

/// Prints the report; returns the exit code (0 when `map-audit run` can work here).
pub fn run() -> i32 {
    let mut probes = Vec::new();
    let privileged = kernel_support::has_bpf_privileges();
    probes.push(Probe {
        what: "privileges (root, or CAP_BPF + CAP_PERFMON)".into(),
        ok: privileged,
        detail: if privileged {
            "present".into()
        } else {
            "missing: run with sudo".into()
        },
    });
    probes.push(Probe {
        what: "BTF (/sys/kernel/btf/vmlinux)".into(),
        ok: kernel_support::has_btf(),
        detail: if kernel_support::has_btf() {
            "present".into()
        } else {
            "missing: needs CONFIG_DEBUG_INFO_BTF=y".into()
        },
    });
    let tracefs = tracefs::root();
    probes.push(Probe {
        what: "tracefs".into(),
        ok: tracefs.is_ok(),
        detail: match &tracefs {
            Ok(root) => format!("mounted at {}", root.display()),
            Err(err) => format!("{err:#}"),
        },
    });
    let tracepoint = |category: &'static str, name: &'static str| -> bool {
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
        ("sched", "sched_process_fork"),
        ("sched", "sched_process_exit"),
        ("exceptions", "page_fault_user"),
        ("exceptions", "page_fault_kernel"),
    ] {
        let ok = tracepoint(category, name);
        needed_tracepoints &= ok || name == "page_fault_kernel";
        probes.push(Probe {
            what: format!("tracepoint {category}:{name}"),
            ok,
            detail: if ok {
                "present".into()
            } else {
                "missing".into()
            },
        });
    }
    let ringbuf = is_map_supported(MapType::RingBuf).unwrap_or(false);
    probes.push(Probe {
        what: "ring buffer map (Linux 5.8+)".into(),
        ok: ringbuf,
        detail: if ringbuf {
            "supported".into()
        } else {
            "unsupported: needs Linux 5.8+".into()
        },
    });
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
    probes.push(Probe {
        what: "kprobe attach (kprobe_events)".into(),
        ok: kprobe_events,
        detail: if kprobe_events {
            "present".into()
        } else {
            "missing: kernel built without CONFIG_KPROBES".into()
        },
    });
    probes.push(Probe {
        what: "perf software event page-faults".into(),
        ok: perf_page_faults_available(),
        detail: "perf_event_open(PERF_COUNT_SW_PAGE_FAULTS) on this process".into(),
    });

    for probe in &probes {
        println!(
            "{:<4} {:<48} {}",
            if probe.ok { "yes" } else { "no" },
            probe.what,
            probe.detail
        );
    }
    let fault_hook = tracepoint("exceptions", "page_fault_user") && raw_tracepoint_programs;
    let perf_fallback = perf_page_faults_available();
    let can_run = privileged
        && kernel_support::has_btf()
        && ringbuf
        && needed_tracepoints
        && tracepoint_programs
        && (fault_hook || kprobe_events || perf_fallback);
    println!();
    println!("map-audit run would use:");
    println!(
        "  mmap/munmap/fork/exit: tracepoints (syscalls:sys_*_mmap, sys_*_munmap, sched:sched_process_*)"
    );
    let chosen = if fault_hook {
        "raw_tracepoint:exceptions:page_fault_{user,kernel} (cheapest measured)"
    } else if kprobe_events {
        "kprobe:handle_mm_fault (no usable exceptions:page_fault_* tracepoints)"
    } else if perf_fallback {
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
    if can_run {
        println!("\nmap-audit can run on this kernel.");
        0
    } else {
        println!("\nmap-audit cannot run here: see the `no` lines above.");
        1
    }
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
