//! What `vm-test` and `vm-run` share: Debian's cloud kernels (downloaded once into
//! target/vm/kernels), the agent built statically, an initramfs of busybox and files
//! from the host, and a guest booted under qemu's TCG: never `-enable-kvm`, since
//! /dev/kvm on these machines is not hardware virtualisation (see platform notes).

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::run;

/// How long one guest may run (boot, its work, power-off) before it is killed.
pub const GUEST_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The mounts every guest's /init starts with: what the agent needs.
pub const INIT_MOUNTS: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
"#;

/// A Debian kernel: the apt package name is `prefix` + a number + `suffix`; the newest
/// one Debian's package lists hold is used: the host's, or those of `sources` (apt
/// source lines, read into lists of their own under the kernel cache) for a release
/// the host does not follow.
pub struct KernelSource {
    pub label: &'static str,
    prefix: &'static str,
    suffix: &'static str,
    sources: &'static str,
    /// The integration-test binaries `vm-test` runs in this kernel's guest. Their
    /// ignored tests run too: they need what the host lacks (soft-dirty bits for
    /// `rearm`).
    pub suites: &'static [&'static str],
}

/// What a kernel the programs load on runs.
const FULL_SUITES: &[&str] = &["fault_hooks", "audit", "rearm", "kernel_features"];

pub const KERNELS: [KernelSource; 3] = [
    // Debian 11's kernel (as Amazon Linux 2's and, for the features, Ubuntu 22.04's
    // 5.15): five of the features are missing, so the object for older kernels runs.
    KernelSource {
        label: "5.10",
        prefix: "linux-image-5.10.0-",
        suffix: "-cloud-amd64",
        sources: "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bullseye main\n\
                  deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bullseye-security main\n",
        suites: FULL_SUITES,
    },
    KernelSource {
        label: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64",
        sources: "",
        suites: FULL_SUITES,
    },
    KernelSource {
        label: "6.12",
        prefix: "linux-image-6.12.",
        suffix: "+deb12-cloud-amd64",
        sources: "",
        suites: FULL_SUITES,
    },
];

/// Every suite some guest runs.
pub fn all_suites() -> Vec<&'static str> {
    let mut suites: Vec<&str> = KERNELS
        .iter()
        .flat_map(|k| k.suites.iter().copied())
        .collect();
    suites.sort_unstable();
    suites.dedup();
    suites
}

/// `apt-get` or `apt-cache` on the host's lists, or on `source`'s own.
fn apt(tool: &str, cache: &Path, source: &KernelSource) -> Result<Command> {
    let mut command = Command::new(tool);
    if source.sources.is_empty() {
        return Ok(command);
    }
    let apt = cache.join(format!("apt-{}", source.label));
    fs::create_dir_all(apt.join("lists/partial"))?;
    let list = apt.join("sources.list");
    fs::write(&list, source.sources)?;
    command
        .arg(format!("-oDir::Etc::SourceList={}", list.display()))
        .arg("-oDir::Etc::SourceParts=/dev/null")
        .arg(format!(
            "-oDir::State::Lists={}",
            apt.join("lists").display()
        ))
        .arg("-oAPT::Sandbox::User=root");
    Ok(command)
}

pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

pub fn ensure_host_tools() -> Result<()> {
    let missing: Vec<&str> = [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox-static"),
    ]
    .into_iter()
    .filter(|(tool, _)| !Path::new("/usr/bin").join(tool).exists())
    .map(|(_, package)| package)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    crate::toolchain::apt_install("vm-test's qemu and busybox", &missing)
}

/// The newest kernel package matching `source`, downloaded and unpacked once.
pub fn fetch_kernel(cache: &Path, source: &KernelSource) -> Result<PathBuf> {
    fs::create_dir_all(cache)?;
    if !source.sources.is_empty() {
        run(apt("apt-get", cache, source)?.args(["update", "-q"]))?;
    }
    let listing = apt("apt-cache", cache, source)?
        .args(["search", "--names-only"])
        .arg(format!("^{}", source.prefix.replace('.', "\\.")))
        .output()?;
    let package = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|name| {
            let number = name
                .strip_prefix(source.prefix)?
                .strip_suffix(source.suffix)?;
            Some((number.parse::<u32>().ok()?, name.to_string()))
        })
        .max()
        .map(|(_, name)| name)
        .with_context(|| {
            format!(
                "no {}N{} package in apt's lists (run apt-get update)",
                source.prefix, source.suffix
            )
        })?;
    let unpacked = cache.join(&package);
    let release = package.trim_start_matches("linux-image-");
    let vmlinuz = unpacked.join(format!("boot/vmlinuz-{release}"));
    if vmlinuz.exists() {
        return Ok(vmlinuz);
    }
    run(apt("apt-get", cache, source)?
        .args(["download", "-q"])
        .arg(&package)
        .current_dir(cache))?;
    let deb = fs::read_dir(cache)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{package}_")))
        })
        .with_context(|| format!("apt-get download left no .deb for {package}"))?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    if !vmlinuz.exists() {
        bail!("{} has no {}", deb.display(), vmlinuz.display());
    }
    Ok(vmlinuz)
}

/// Boots `vmlinuz` with `initramfs`; `parameters` go on the kernel's command line
/// (the guest's /init reads its own from /proc/cmdline).
pub fn boot(
    vmlinuz: &Path,
    initramfs: &Path,
    log: &Path,
    memory_mib: u32,
    parameters: &str,
) -> Result<()> {
    let mut qemu = Command::new("qemu-system-x86_64")
        .args(["-m", &memory_mib.to_string(), "-smp", "2", "-cpu", "max"])
        // Both vCPUs on one host thread. Multi-threaded TCG let a vCPU keep running a
        // stale translation of kernel text the other had just patched (the sys_enter
        // tracepoint's jump label, flipped when the agent attaches): int3, the kprobe
        // handler sees the int3 gone and retries, forever (a soft lockup on 6.1).
        .args(["-accel", "tcg,thread=single"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args([
            "-append",
            // A soft lockup panics (qemu then exits: -no-reboot) with every CPU's
            // backtrace on the console, instead of hanging until GUEST_TIMEOUT.
            &format!(
                "console=ttyS0 rdinit=/init quiet loglevel=5 panic=-1 \
                 softlockup_panic=1 softlockup_all_cpu_backtrace=1 {parameters}"
            ),
        ])
        .stdin(Stdio::null())
        .stdout(fs::File::create(log)?)
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start qemu-system-x86_64")?;
    let deadline = Instant::now() + GUEST_TIMEOUT;
    loop {
        if let Some(status) = qemu.try_wait()? {
            if !status.success() {
                bail!("qemu exited with {status}; see {}", log.display());
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = qemu.kill();
            bail!(
                "the guest did not power off in {GUEST_TIMEOUT:?}; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The kernel labelled `label` (5.10, 6.1, 6.12).
pub fn kernel(label: &str) -> Result<&'static KernelSource> {
    KERNELS
        .iter()
        .find(|k| k.label == label)
        .with_context(|| format!("no kernel {label}; known: 5.10, 6.1, 6.12"))
}

/// The agent, built statically (no libraries in the guest) into `target_dir`, where
/// `cargo test --no-run` with the same flags leaves it too.
pub fn build_static_agent(target_dir: &Path) -> Result<PathBuf> {
    crate::build_ebpf::build()?;
    run(static_cargo()
        .args(["build", "--package", "map-audit", "--target", STATIC_TARGET])
        .arg("--target-dir")
        .arg(target_dir))?;
    Ok(static_agent_path(target_dir))
}

/// Where a static debug build in `target_dir` puts the agent.
pub fn static_agent_path(target_dir: &Path) -> PathBuf {
    target_dir.join(STATIC_TARGET).join("debug/map-audit")
}

/// Cargo with the static build's flags.
pub fn static_cargo() -> Command {
    let mut cargo = crate::cargo();
    cargo
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_PROFILE_DEV_DEBUG", "0");
    cargo
}

/// A fresh initramfs tree at `root`: the usual folders and busybox.
pub fn new_root(root: &Path) -> Result<()> {
    if root.exists() {
        fs::remove_dir_all(root)?;
    }
    for dir in [
        "bin", "dev", "proc", "sys", "tmp", "tests", "root", "etc", "run",
    ] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::copy("/usr/bin/busybox", root.join("bin/busybox"))?;
    Ok(())
}

/// Copies host file `path` into `root` at the same absolute path.
pub fn copy_in(root: &Path, path: &Path) -> Result<()> {
    let inside = root.join(path.strip_prefix("/")?);
    fs::create_dir_all(inside.parent().context("a file path has a parent")?)?;
    fs::copy(path, &inside)
        .with_context(|| format!("copying {} into the guest failed", path.display()))?;
    Ok(())
}

/// Writes `init` as the guest's /init and packs `root` into `archive`.
pub fn pack(root: &Path, init: &str, archive: &Path) -> Result<()> {
    let path = root.join("init");
    fs::write(&path, init)?;
    run(Command::new("chmod").arg("755").arg(&path))?;
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | busybox cpio -o -H newc > \"$0\" 2>/dev/null")
        .arg(archive)
        .current_dir(root)
        .status()?;
    if !status.success() {
        bail!("packing the initramfs failed");
    }
    Ok(())
}
