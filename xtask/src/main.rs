//! `cargo xtask`: the one entry point for building, running and testing map-audit.

mod bench;
mod bench_go;
mod bench_msync;
mod bench_watch;
mod build_ebpf;
mod go_toolchains;
mod image;
mod soak;
mod toolchain;
mod vm_guest;
mod vm_run;
mod vm_test;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the eBPF object (installs Debian's BPF toolchain and bpf-linker if missing).
    BuildEbpf,
    /// Lint the eBPF crate with Debian's clippy, warnings as errors (installs it).
    ClippyEbpf,
    /// Build the eBPF object and the agent.
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Build everything and run the agent as root: `cargo xtask run -- run --pid 1234`.
    Run {
        #[arg(long)]
        release: bool,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build everything and run the agent on a small demo workload.
    Demo,
    /// Measure the cost per page fault against no tracing and the peers; writes
    /// docs/benchmarks.md (needs root).
    Bench {
        /// Rounds of interleaved runs (medians are reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Measure Go mode's cost per map write instead (docs/benchmarks-go.md).
        #[arg(long, conflicts_with_all = ["watch", "msync"])]
        go: bool,
        /// Measure `watch`'s cost per watched write instead (docs/benchmarks-watch.md).
        #[arg(long, conflicts_with = "msync")]
        watch: bool,
        /// Measure msync auditing's cost on a program that writes and msyncs a shared
        /// file instead (docs/benchmarks-msync.md).
        #[arg(long)]
        msync: bool,
    },
    /// Run each kernel's test suites on Debian kernels under qemu (TCG) and print a
    /// table of kernel x fault hook (needs root: the guests load eBPF).
    VmTest {
        /// Only these kernels (5.10, 6.1, 6.12); all by default.
        #[arg(long = "kernel")]
        kernels: Vec<String>,
    },
    /// Boot a matrix guest with the agent on PATH as `map-audit`, run COMMAND in it as
    /// root, relay its output and exit with its status (needs root):
    /// `cargo xtask vm-run --file ./prog -- map-audit run -- ./prog`.
    VmRun {
        /// The guest's kernel (5.10, 6.1, 6.12).
        #[arg(long, default_value = "6.12")]
        kernel: String,
        /// Copy this file to the same absolute path in the guest, with the libraries
        /// it links (repeatable).
        #[arg(long = "file", value_name = "PATH")]
        files: Vec<PathBuf>,
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Run the release agent for N minutes under process churn and faults; report RSS,
    /// table fill, events/s and losses over time to docs/soak.md (needs root).
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
    },
    /// Build the agent statically into a minimal OCI image with podman,
    /// `localhost/map-audit:VERSION` (installs podman and runc if missing).
    Image {
        /// The debug build (the one `vm-test` makes) instead of the release one.
        #[arg(long)]
        debug: bool,
        /// Then run it under podman as the DaemonSet runs it, against a program on
        /// the host, and check the stream (needs root).
        #[arg(long)]
        check: bool,
    },
    /// Build everything and run all tests (integration tests need root).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Task::BuildEbpf => build_ebpf::build().map(drop),
        Task::ClippyEbpf => build_ebpf::clippy(),
        Task::Build { release } => build_all(release),
        Task::Run { release, args } => {
            build_all(release)?;
            run_agent(release, &args)
        }
        Task::Demo => {
            build_all(false)?;
            let demo = build_demo()?;
            run_agent(
                false,
                &[
                    "run".into(),
                    "--".into(),
                    demo.display().to_string(),
                    "demo".into(),
                ],
            )
        }
        Task::Bench {
            rounds,
            go,
            watch,
            msync,
        } => {
            build_all(true)?;
            if go {
                bench_go::bench(rounds)
            } else if watch {
                bench_watch::bench(rounds)
            } else if msync {
                bench_msync::bench(rounds)
            } else {
                bench::bench(rounds)
            }
        }
        Task::VmTest { kernels } => vm_test::vm_test(&kernels),
        Task::VmRun {
            kernel,
            files,
            command,
        } => std::process::exit(vm_run::vm_run(&kernel, &files, &command)?),
        Task::Soak { minutes } => {
            build_all(true)?;
            soak::soak(minutes)
        }
        Task::Image { debug, check } => {
            let name = image::build(debug)?;
            if check {
                image::check(&name)?;
            }
            Ok(())
        }
        Task::Test { args } => {
            build_ebpf::build()?;
            go_toolchains::ensure()?;
            // The log-collector test runs Debian's rsyslog; the unwinding tests compare
            // with perf's DWARF unwinder and build C++ and Rust workloads.
            if !Path::new("/usr/sbin/rsyslogd").exists() {
                toolchain::apt_install("rsyslog (the log-collector test)", &["rsyslog"])?;
            }
            if !Path::new("/usr/bin/perf").exists() || !Path::new("/usr/bin/g++").exists() {
                toolchain::apt_install(
                    "linux-perf and g++ (the unwinding tests)",
                    &["linux-perf", "g++"],
                )?;
            }
            // libc's static functions are named from its separate debug file.
            if !Path::new("/usr/share/doc/libc6-dbg").exists() {
                toolchain::apt_install("libc6-dbg (the debug-file tests)", &["libc6-dbg"])?;
            }
            // A real container runtime: podman, with runc (crun refuses this host's
            // hybrid cgroup layout).
            if !Path::new("/usr/bin/podman").exists() || !Path::new("/usr/sbin/runc").exists() {
                toolchain::apt_install(
                    "podman and runc (the container tests)",
                    &["podman", "runc"],
                )?;
            }
            // A real containerd (the pod tests start their own daemon).
            if !Path::new("/usr/bin/containerd").exists() {
                toolchain::apt_install("containerd (the containerd tests)", &["containerd"])?;
            }
            // A real debuginfod server, serving a test program's debug file.
            if !Path::new("/usr/bin/debuginfod").exists() {
                toolchain::apt_install("debuginfod (the debuginfod tests)", &["debuginfod"])?;
            }
            let mut test = cargo();
            test.args(["test", "--workspace"]).args(&args);
            run(&mut test)
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

pub fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.current_dir(workspace_root());
    command
}

fn build_all(release: bool) -> Result<()> {
    build_ebpf::build()?;
    let mut build = cargo();
    build.args(["build", "--package", "map-audit"]);
    if release {
        build.arg("--release");
    }
    run(&mut build)
}

fn run_agent(release: bool, args: &[String]) -> Result<()> {
    let binary = workspace_root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("map-audit");
    let mut command = if nix_is_root() {
        Command::new(&binary)
    } else {
        eprintln!("xtask: map-audit needs root; running it with sudo");
        let mut sudo = Command::new("sudo");
        sudo.arg(&binary);
        sudo
    };
    let status = command
        .args(args)
        .status()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    std::process::exit(status.code().unwrap_or(1));
}

/// Compiles the demo workload (the integration tests' C workload) with frame pointers.
fn build_demo() -> Result<PathBuf> {
    let root = workspace_root();
    let source = root.join("map-audit-userspace/tests/workloads/workload.c");
    let output = root.join("target/demo-workload");
    let mut gcc = Command::new("gcc");
    gcc.args([
        "-O1",
        "-g",
        "-fno-omit-frame-pointer",
        "-mno-omit-leaf-frame-pointer",
        "-o",
    ])
    .arg(&output)
    .arg(&source);
    run(&mut gcc)?;
    Ok(output)
}

pub fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .map(|v| v.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs `command`, failing with its name when it fails.
pub fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot start {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}
