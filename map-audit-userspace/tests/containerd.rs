//! Containers of a real containerd (Debian's, with runc) laid out as kubelet lays out a
//! pod with the cgroupfs driver: a sandbox container and an app container under
//! `/kubepods/besteffort/pod<UID>/`, with kubelet's labels, in containerd's `k8s.io`
//! namespace. The agent finds the pod by name through containerd's API, audits only
//! it, and names each container (runtime, name, image) and the pod in every event.
//! Each test binary runs its own containerd on a socket of its own.

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use common::{
    Agent,
    test_image::{image, podman, tmp},
};

/// containerd's own directories: its root on /tmp (its snapshotter wants a plain
/// file system below it).
fn state_dir() -> PathBuf {
    std::env::temp_dir().join(format!("map-audit-containerd-{}", std::process::id()))
}

fn socket() -> PathBuf {
    state_dir().join("containerd.sock")
}

/// containerd, started once per test binary, with the test image imported.
fn containerd() -> &'static Path {
    static STARTED: OnceLock<PathBuf> = OnceLock::new();
    STARTED.get_or_init(|| {
        let dir = state_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n",
                dir.display(),
                socket().display()
            ),
        )
        .unwrap();
        let mut daemon = Command::new("containerd");
        daemon
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("containerd.log")).unwrap());
        // SAFETY: prctl alone between fork and exec. The daemon ends with the thread
        // that started it (the test's, after its pod is gone).
        unsafe {
            use std::os::unix::process::CommandExt;
            daemon.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        // Not waited for: it ends by the signal above.
        #[allow(clippy::zombie_processes)]
        daemon
            .spawn()
            .expect("containerd runs (`cargo xtask test` installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while ctr(&["version"]).is_err() {
            assert!(Instant::now() < deadline, "containerd never answered");
            std::thread::sleep(Duration::from_millis(100));
        }
        let archive = tmp().join(format!("containerd-image-{}.tar", std::process::id()));
        podman(&[
            "save",
            "--format",
            "oci-archive",
            "-o",
            archive.to_str().unwrap(),
            image(),
        ]);
        ctr(&["images", "import", archive.to_str().unwrap()]).unwrap();
        socket()
    })
}

/// `ctr` on the test's containerd, in kubelet's namespace.
fn ctr(args: &[&str]) -> Result<Output, String> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(socket())
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .map_err(|e| format!("ctr: {e}"))?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(format!(
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn container_id(name: &str) -> String {
    // 64 hex digits, as kubelet's runtimes make them.
    let seed = format!("{name}-{}-{:?}", std::process::id(), Instant::now());
    let digest = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(seed.as_bytes())?;
            c.wait_with_output()
        })
        .unwrap();
    String::from_utf8_lossy(&digest.stdout)[..64].to_string()
}

/// `ctr run` of `/workload ARGS` in the pod's cgroup with kubelet's labels; `detach`
/// leaves it running.
fn run_in_pod(pod: &Pod, id: &str, container: &str, detach: bool, args: &[&str]) {
    let cgroup = format!("/kubepods/besteffort/pod{}/{id}", pod.uid);
    let labels = [
        format!("io.kubernetes.pod.name={}", pod.name),
        "io.kubernetes.pod.namespace=shop".to_string(),
        format!("io.kubernetes.pod.uid={}", pod.uid),
        format!("io.kubernetes.container.name={container}"),
    ];
    let mut run = vec!["run", "--cgroup", &cgroup];
    if detach {
        run.push("-d");
    } else {
        run.push("--rm");
    }
    for label in &labels {
        run.extend(["--label", label.as_str()]);
    }
    run.extend([image(), id, "/workload"]);
    run.extend_from_slice(args);
    ctr(&run).unwrap();
}

struct Pod {
    name: String,
    uid: String,
    sandbox: String,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = ctr(&["tasks", "kill", "--signal", "SIGKILL", &self.sandbox]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ctr(&["containers", "rm", &self.sandbox]).is_err() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// A pod with its sandbox running (writing a page every 100 ms), as kubelet starts one.
fn pod() -> Pod {
    containerd();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let pod = Pod {
        name: format!("web-{}", std::process::id()),
        uid: format!(
            "{:08x}-c0de-4000-8000-{:012x}",
            std::process::id(),
            nanos & 0xffff_ffff_ffff
        ),
        sandbox: container_id("sandbox"),
    };
    run_in_pod(
        &pod,
        &pod.sandbox,
        "POD",
        true,
        &["loop", "1", "60000", "100000"],
    );
    pod
}

#[test]
fn a_pod_of_containerd_is_found_by_name_and_every_event_names_it() {
    let pod = pod();
    let socket = format!("containerd={}", containerd().display());
    let agent = Agent::start(&[
        "run",
        "--pod",
        &format!("shop/{}", pod.name),
        "--container-api",
        &socket,
    ]);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    let app = container_id("app");
    run_in_pod(&pod, &app, "app", false, &["spawn", "2"]);
    let run = agent.stop();

    let writes = run.of_kind("write_fault");
    let of_app: Vec<_> = writes
        .iter()
        .filter(|e| e["container"]["id"] == app.as_str())
        .collect();
    let pids: std::collections::BTreeSet<u64> =
        of_app.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    assert!(pids.len() >= 2, "the app and its forked child: {pids:?}");
    for event in &writes {
        let c = &event["container"];
        assert!(
            c["id"] == app.as_str() || c["id"] == pod.sandbox.as_str(),
            "only the pod's containers: {event}"
        );
        assert_eq!(event["kubernetes"]["pod_uid"], pod.uid.as_str(), "{event}");
    }
    // Aggregates wait for the runtime's answer (up to 2.5 s): every one is named.
    for event in &of_app {
        let (c, k) = (&event["container"], &event["kubernetes"]);
        assert_eq!(c["runtime"], "containerd", "{event}");
        assert_eq!(c["name"], "app", "{event}");
        assert_eq!(c["image"], image(), "{event}");
        assert_eq!(k["pod_name"], pod.name.as_str(), "{event}");
        assert_eq!(k["pod_namespace"], "shop", "{event}");
        assert_eq!(k["container_name"], "app", "{event}");
    }
    let agent_counters = &run.stopped()["counters"]["agent"];
    assert!(
        agent_counters["container_lookups"].as_u64() >= Some(2),
        "{agent_counters}"
    );
    assert_eq!(
        agent_counters["container_lookup_misses"], 0,
        "{agent_counters}"
    );
}
