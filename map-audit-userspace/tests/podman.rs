//! Containers of a real runtime, Debian's podman (with runc): events of a container's
//! processes name its id, runtime, name and image (asked from podman's Docker-compatible
//! API), a forked child's too, and their frames are named as on the host; a host
//! process has no container; `--container` audits only that container, started after
//! the agent; a runtime socket that does not answer costs a counted miss.
//! The image is built from a rootfs holding the static workload (`podman import`: no
//! registry is reachable here).

mod common;

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use common::{
    Agent, Run,
    test_image::{image, podman, stripped_debug_file, tmp},
    workload,
};
use serde_json::Value;

/// podman's API on a socket of this test binary; the service ends by itself once idle.
fn api_socket() -> &'static Path {
    static SOCKET: OnceLock<PathBuf> = OnceLock::new();
    SOCKET.get_or_init(|| {
        let socket = tmp().join(format!("podman-{}.sock", std::process::id()));
        // Not waited for: it exits by itself 60 s after its last request.
        #[allow(clippy::zombie_processes)]
        Command::new("podman")
            .env("CONTAINERS_CONF", tmp().join("containers.conf"))
            .args(["system", "service", "--time=60"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("podman system service starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            assert!(
                Instant::now() < deadline,
                "podman's API socket never appeared"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        socket
    })
}

/// A container of the image running `/workload ARGS`, created (not started); removed
/// when dropped.
struct TestContainer {
    name: String,
    id: String,
}

impl TestContainer {
    fn create(test: &str, args: &[&str]) -> Self {
        Self::create_running(test, "/workload", args)
    }

    fn create_running(test: &str, program: &str, args: &[&str]) -> Self {
        Self::create_with(test, &[], program, args)
    }

    /// With more `podman create` options.
    fn create_with(test: &str, options: &[&str], program: &str, args: &[&str]) -> Self {
        let name = format!("map-audit-{test}-{}", std::process::id());
        let _ = Command::new("podman").args(["rm", "-f", &name]).output();
        let mut create = vec!["create", "--runtime", "runc", "--name", &name];
        create.extend_from_slice(options);
        create.extend_from_slice(&[image(), program]);
        create.extend_from_slice(args);
        let out = podman(&create);
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert_eq!(id.len(), 64, "a container id: {id}");
        Self { name, id }
    }

    /// Starts it and waits for its end.
    fn run(&self) {
        podman(&["start", "--attach", &self.name]);
    }
}

impl Drop for TestContainer {
    fn drop(&mut self) {
        let _ = Command::new("podman")
            .env("CONTAINERS_CONF", tmp().join("containers.conf"))
            .args(["rm", "-f", &self.name])
            .output();
    }
}

/// The workload run on the host, writing 2 pages.
fn run_on_host() {
    let host = Command::new(workload())
        .args(["anon", "2"])
        .output()
        .unwrap();
    assert!(host.status.success());
}

fn started(args: &[&str]) -> Agent {
    let agent = Agent::start(args);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    agent
}

fn writes_of(run: &Run, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
    run.of_kind("write_fault")
        .into_iter()
        .filter(|e| pred(e))
        .cloned()
        .collect()
}

#[test]
fn a_podman_containers_writes_name_it_its_image_and_every_frame() {
    let container = TestContainer::create("named", &["spawn", "2"]);
    let socket = format!("podman={}", api_socket().display());
    let host_comm: String = workload()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .chars()
        .take(15)
        .collect();
    let agent = started(&[
        "run",
        "--comm",
        "workload",
        "--comm",
        &host_comm,
        "--container-api",
        &socket,
    ]);
    container.run();
    run_on_host();
    let run = agent.stop();

    let inside = writes_of(&run, |e| e["container"]["id"] == container.id.as_str());
    let pids: std::collections::BTreeSet<u64> =
        inside.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    assert!(
        pids.len() >= 2,
        "the program and its forked child: {pids:?}"
    );
    for event in &inside {
        let c = &event["container"];
        assert_eq!(c["runtime"], "podman", "{event}");
        assert_eq!(c["name"], container.name.as_str(), "{event}");
        assert_eq!(c["image"], image(), "{event}");
        // The program lives in the container's mount namespace only: named through
        // the mapping's file, as on the host.
        let frames: Vec<&Value> = event["stack"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["module"] == "/workload")
            .collect();
        assert!(!frames.is_empty(), "{event}");
        assert!(frames.iter().all(|f| f["symbol"].is_string()), "{event}");
    }
    let innermost: Vec<&str> = inside
        .iter()
        .filter_map(|e| e["stack"][0]["symbol"].as_str())
        .collect();
    assert!(innermost.contains(&"write_pages"), "{innermost:?}");
    assert!(innermost.contains(&"child_touch"), "{innermost:?}");

    let on_host = writes_of(&run, |e| {
        e["exe"].as_str() == workload().to_str() && e["container"].is_null()
    });
    assert!(!on_host.is_empty(), "the host's workload has no container");
    assert!(run.stopped()["counters"]["agent"]["container_lookups"].as_u64() >= Some(1));
}

#[test]
fn container_scope_audits_that_container_only_even_started_later() {
    let audited = TestContainer::create("scoped", &["anon", "2"]);
    let other = TestContainer::create("other", &["anon", "2"]);
    let agent = started(&[
        "run",
        "--container",
        &audited.id[..12],
        "--no-container-api",
    ]);
    audited.run();
    other.run();
    run_on_host();
    let run = agent.stop();
    let writes = run.of_kind("write_fault");
    assert!(!writes.is_empty(), "the audited container's writes");
    for event in writes {
        assert_eq!(event["container"]["id"], audited.id.as_str(), "{event}");
        assert!(event["container"]["name"].is_null(), "not asked: {event}");
    }
}

/// A pod as kubelet lays it out with the cgroupfs driver: the container's cgroup under
/// `/kubepods/besteffort/pod<UID>/`, and kubelet's labels on the container.
fn pod_container(test: &str, pod: &str, uid: &str, args: &[&str]) -> TestContainer {
    let parent = format!("--cgroup-parent=/kubepods/besteffort/pod{uid}");
    let labels = [
        format!("io.kubernetes.pod.name={pod}"),
        "io.kubernetes.pod.namespace=shop".to_string(),
        format!("io.kubernetes.pod.uid={uid}"),
        "io.kubernetes.container.name=app".to_string(),
    ];
    let mut options = vec![parent.as_str()];
    for label in &labels {
        options.extend(["--label", label.as_str()]);
    }
    TestContainer::create_with(test, &options, "/workload", args)
}

/// A UID of this test run (pod cgroups made by runc outlive their containers).
fn pod_uid(test: u16) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    format!(
        "{:08x}-{test:04x}-4000-8000-{:012x}",
        std::process::id(),
        nanos & 0xffff_ffff_ffff
    )
}

/// `--pod NAMESPACE/NAME`: the pod found by kubelet's labels through podman's API, its
/// cgroup made when its container starts (after the agent); only its processes are
/// audited, and their events carry the pod's uid, name, namespace and container name.
#[test]
fn pod_scope_audits_that_pod_only_and_names_it() {
    let uid = pod_uid(1);
    let pod = format!("web-{}", std::process::id());
    let audited = pod_container("pod", &pod, &uid, &["spawn", "2"]);
    let other = TestContainer::create("not-in-pod", &["anon", "2"]);
    let socket = format!("podman={}", api_socket().display());
    let agent = started(&[
        "run",
        "--pod",
        &format!("shop/{pod}"),
        "--container-api",
        &socket,
    ]);
    audited.run();
    other.run();
    run_on_host();
    let run = agent.stop();
    let writes = run.of_kind("write_fault");
    let pids: std::collections::BTreeSet<u64> =
        writes.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
    assert!(
        pids.len() >= 2,
        "the program and its forked child: {pids:?}"
    );
    for event in &writes {
        assert_eq!(event["container"]["id"], audited.id.as_str(), "{event}");
        assert_eq!(event["kubernetes"]["pod_uid"], uid.as_str(), "{event}");
    }
    // Names come with the runtime's answer: the first events may precede it.
    let named = writes
        .iter()
        .filter(|e| e["kubernetes"]["pod_name"] == pod.as_str())
        .collect::<Vec<_>>();
    assert!(!named.is_empty(), "{writes:?}");
    for event in named {
        let k = &event["kubernetes"];
        assert_eq!(k["pod_namespace"], "shop", "{event}");
        assert_eq!(k["container_name"], "app", "{event}");
    }
    assert!(run.stopped()["counters"]["agent"]["containers_scoped"].as_u64() >= Some(1));
}

/// A pod no runtime knows: one sentence saying what was asked and what to give
/// instead, and a non-zero exit.
#[test]
fn an_unknown_pod_is_refused_in_one_sentence() {
    let socket = format!("podman={}", api_socket().display());
    let out = Command::new(common::AGENT)
        .args([
            "run",
            "--pod",
            "shop/no-such-pod",
            "--container-api",
            &socket,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no container of pod shop/no-such-pod was found")
            && stderr.contains("give the pod's UID instead"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn a_runtime_socket_that_does_not_answer_costs_a_counted_miss() {
    let container = TestContainer::create("unanswered", &["anon", "2"]);
    let missing = tmp().join("no-such-podman.sock");
    let socket = format!("podman={}", missing.display());
    let agent = started(&["run", "--comm", "workload", "--container-api", &socket]);
    container.run();
    let run = agent.stop();
    let inside = writes_of(&run, |e| e["container"]["id"] == container.id.as_str());
    assert!(!inside.is_empty(), "events still flow");
    assert!(inside.iter().all(|e| e["container"]["name"].is_null()));
    assert!(run.stopped()["counters"]["agent"]["container_lookup_misses"].as_u64() >= Some(1));
}

/// A stripped program in a container (another mount namespace: the agent cannot look
/// at it when it is mapped) gets its frames named from debuginfod all the same: its
/// aggregates wait for the debug file.
#[test]
fn a_stripped_program_in_a_container_is_named_from_debuginfod() {
    let container = TestContainer::create_running("stripped", "/workload-stripped", &["anon", "2"]);
    let (debug_file, build_id) = stripped_debug_file();
    let serve = tmp().join(format!("podman-serve-{}", std::process::id()));
    std::fs::create_dir_all(&serve).unwrap();
    std::fs::copy(&debug_file, serve.join("workload.debug")).unwrap();
    let server = common::debuginfod_server::DebuginfodServer::serving(&serve, &build_id);
    let cache = tmp().join(format!("podman-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let agent = started(&[
        "run",
        "--container",
        &container.id[..12],
        "--no-container-api",
        "--debuginfod",
        &server.url,
        "--debuginfod-cache",
        cache.to_str().unwrap(),
    ]);
    container.run();
    let run = agent.stop();
    let innermost: Vec<&Value> = run
        .of_kind("write_fault")
        .into_iter()
        .filter_map(|e| e["stack"].as_array()?.first())
        .filter(|f| f["module"] == "/workload-stripped")
        .collect();
    assert!(!innermost.is_empty(), "{:#?}", run.events);
    assert!(
        innermost.iter().any(|f| f["symbol"] == "write_pages"),
        "{innermost:?}"
    );
    let agent_counters = &run.stopped()["counters"]["agent"];
    assert_eq!(agent_counters["aggregates_sent_before_debug_file"], 0);
    assert!(agent_counters["debuginfod_fetches"].as_u64() >= Some(1));
}
