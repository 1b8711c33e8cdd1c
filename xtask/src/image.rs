//! `cargo xtask image`: the agent, built statically, in a minimal OCI image (`FROM
//! scratch`: the one file) built with Debian's podman, tagged `localhost/map-audit:
//! VERSION`; then, with `--check`, run under podman with what the DaemonSet grants
//! (the host's pid namespace, its capability list, the BTF, tracefs and cgroup mounts,
//! a read-only root, unconfined AppArmor and seccomp) to audit a program on the host,
//! the stream checked.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail, ensure};

use crate::{run, toolchain, vm_guest, workspace_root};

/// The DaemonSet's capabilities (deploy/kubernetes/daemonset.yaml).
const CAPABILITIES: &[&str] = &[
    "BPF",
    "PERFMON",
    "SYS_PTRACE",
    "DAC_READ_SEARCH",
    "SYSLOG",
    "CHECKPOINT_RESTORE",
];

/// Builds the image (release agent, or the debug one `vm-test` builds too with
/// `debug`); returns its name.
pub fn build(debug: bool) -> Result<String> {
    if !Path::new("/usr/bin/podman").exists() || !Path::new("/usr/sbin/runc").exists() {
        toolchain::apt_install("podman and runc (the image)", &["podman", "runc"])?;
    }
    let agent = static_agent(debug)?;
    let context = workspace_root().join("target/image");
    if context.exists() {
        fs::remove_dir_all(&context)?;
    }
    fs::create_dir_all(&context)?;
    fs::copy(&agent, context.join("map-audit"))
        .with_context(|| format!("copying {}", agent.display()))?;
    fs::write(
        context.join("Containerfile"),
        "FROM scratch\n\
         COPY map-audit /usr/local/bin/map-audit\n\
         ENTRYPOINT [\"/usr/local/bin/map-audit\"]\n",
    )?;
    let name = format!("localhost/map-audit:{}", env!("CARGO_PKG_VERSION"));
    run(podman()
        .args(["build", "--quiet", "--tag", &name, "--file"])
        .arg(context.join("Containerfile"))
        .arg(&context))?;
    println!(
        "built {name}; to deploy it: podman push {name} REGISTRY/map-audit:{} and set that \
         image in deploy/kubernetes/daemonset.yaml",
        env!("CARGO_PKG_VERSION")
    );
    Ok(name)
}

/// The static agent: release into target/image-build, or vm-test's debug build.
fn static_agent(debug: bool) -> Result<PathBuf> {
    if debug {
        return vm_guest::build_static_agent(&workspace_root().join("target/vm"));
    }
    crate::build_ebpf::build()?;
    let target_dir = workspace_root().join("target/image-build");
    run(vm_guest::static_cargo()
        .args(["build", "--release", "--package", "map-audit", "--target"])
        .arg(vm_guest::STATIC_TARGET)
        .arg("--target-dir")
        .arg(&target_dir))?;
    Ok(target_dir
        .join(vm_guest::STATIC_TARGET)
        .join("release/map-audit"))
}

/// podman with this machine kind's settings (see `../shared/platform.md`): runc, and
/// no default ulimits above what the sandbox allows.
fn podman() -> Command {
    let conf = workspace_root().join("target/containers.conf");
    if !conf.exists() {
        let _ = fs::write(&conf, "[containers]\ndefault_ulimits = []\n");
    }
    let mut podman = Command::new("podman");
    podman.env("CONTAINERS_CONF", conf);
    podman
}

/// Runs `image` as the DaemonSet does against a program on the host and checks that
/// its writes are reported with named stacks.
pub fn check(image: &str) -> Result<()> {
    let program = crate::build_demo()?;
    let mut host = Command::new(&program)
        .args(["loop", "4", "6000", "1000"])
        .stderr(Stdio::null())
        .spawn()
        .context("starting the host workload")?;
    let host_pid = host.id();
    let pid = host_pid.to_string();
    // Detached: `run --pid` audits until it is stopped, as in the DaemonSet.
    let name = "map-audit-image-check";
    let _ = podman().args(["rm", "-f", name]).output();
    let mut args: Vec<String> = ["run", "--detach", "--name", name, "--runtime", "runc"]
        .map(String::from)
        .to_vec();
    args.extend(["--pid".into(), "host".into(), "--read-only".into()]);
    args.extend(["--cap-drop".into(), "ALL".into()]);
    for cap in CAPABILITIES {
        args.extend(["--cap-add".into(), (*cap).into()]);
    }
    // The DaemonSet's AppArmor profile is Unconfined. Seccomp too here: podman 4.3's
    // default profile refuses bpf() without CAP_SYS_ADMIN (EPERM creating the first
    // map), the case the DaemonSet's seccomp comment describes.
    for opt in ["apparmor=unconfined", "seccomp=unconfined"] {
        args.extend(["--security-opt".into(), opt.into()]);
    }
    for mount in ["/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/cgroup"] {
        args.extend(["--volume".into(), format!("{mount}:{mount}:ro")]);
    }
    args.extend([image.into(), "run".into(), "--pid".into(), pid.clone()]);
    if let Err(err) = run(podman().args(&args)) {
        let _ = host.kill();
        let _ = host.wait();
        return Err(err);
    }
    let ended = host.wait().context("waiting for the host workload")?;
    // SIGTERM, as Kubernetes stops a pod: the agent detaches and writes agent_stopped.
    run(podman().args(["stop", "--time", "20", name]))?;
    let logs = podman().args(["logs", name]).output()?;
    let state = podman()
        .args(["inspect", "--format", "{{.State.ExitCode}}", name])
        .output()?;
    let _ = podman().args(["rm", "-f", name]).output();
    let stdout = String::from_utf8_lossy(&logs.stdout);
    let exit_code = String::from_utf8_lossy(&state.stdout).trim().to_string();
    ensure!(
        ended.success() && exit_code == "0",
        "the image failed (exit code {exit_code}): podman {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&logs.stderr)
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let writes: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "write_fault" && e["pid"] == host_pid)
        .collect();
    let named = writes.iter().any(|e| {
        e["stack"]
            .as_array()
            .is_some_and(|s| s.iter().any(|f| f["symbol"] == "write_pages"))
    });
    if writes.is_empty() || !named {
        bail!(
            "the image ran but reported {} write_fault events of pid {pid} (a named stack: {named}); its output:\n{stdout}",
            writes.len()
        );
    }
    let stopped = events.last().map(|e| e["event"].clone());
    ensure!(
        stopped == Some("agent_stopped".into()),
        "the stream does not end with agent_stopped"
    );
    println!(
        "image check: {image} under podman (--pid host, {} capabilities, read-only root) reported {} write_fault events of host pid {pid}, stacks named",
        CAPABILITIES.len(),
        writes.len()
    );
    Ok(())
}
