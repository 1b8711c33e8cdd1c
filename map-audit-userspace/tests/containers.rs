//! Every event names the process's cgroup (its id comes from the kernel with each
//! record) and, when the cgroup is a container runtime's or a pod's, the container and
//! pod. The workloads run in real cgroup v2 directories named the way Docker and
//! Kubernetes (systemd driver, containerd) name theirs; forked children keep them.
//! (The runtimes themselves, and names, images and pod names from their APIs: issue 19.)

mod common;

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use common::{Run, run_agent, workload};
use serde_json::{Value, json};

const ID: &str = "4f5c0a2b9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b";
const POD: &str = "0f2e5b4c-1a2b-4c3d-8e9f-0123456789ab";

/// The cgroup2 mount (on a hybrid layout, its `unified` directory).
fn cgroup2_root() -> &'static Path {
    let unified = Path::new("/sys/fs/cgroup/unified");
    if unified.join("cgroup.procs").exists() {
        unified
    } else {
        Path::new("/sys/fs/cgroup")
    }
}

/// Cgroup directories made for one test, removed (innermost first) when dropped.
struct Cgroups(Vec<PathBuf>);

impl Cgroups {
    /// `relative` (below a directory of this test run and `test`) and its parents.
    fn make(test: &str, relative: &str) -> (Self, PathBuf) {
        let mut dirs = Vec::new();
        let top = format!("map-audit-test-{}-{test}", std::process::id());
        let mut dir = cgroup2_root().join(top);
        for component in std::iter::once("").chain(relative.split('/')) {
            dir = dir.join(component);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .expect("creating a cgroup v2 directory (needs root and cgroup2)");
                dirs.push(dir.clone());
            }
        }
        (Self(dirs), dir)
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// `workload spawn 2` run in cgroup `dir`: the program writes a page, then a child it
/// forks writes it again.
fn spawn_in(dir: &Path) -> Run {
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec {} spawn 2",
        dir.display(),
        workload().display()
    );
    let run = run_agent(&["run", "--every-event", "--", "sh", "-c", &script]);
    assert!(run.status.success(), "stderr:\n{}", run.stderr);
    run.assert_accounting();
    run
}

/// The user-mode write faults of the program and of its forked child.
fn program_faults(run: &Run) -> (Vec<&Value>, Vec<&Value>) {
    let faults: Vec<&Value> = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|e| {
            e["comm"] == "workload" || e["exe"].as_str().is_some_and(|x| x.contains("workload"))
        })
        .collect();
    let parent = faults
        .iter()
        .find(|e| common::stack_symbols(e)[0] == "write_pages")
        .map(|e| e["pid"].clone())
        .expect("the program's own write");
    faults.into_iter().partition(|e| e["pid"] == parent)
}

fn relative(dir: &Path) -> String {
    format!("/{}", dir.strip_prefix(cgroup2_root()).unwrap().display())
}

#[test]
fn events_name_the_docker_container_their_process_runs_in() {
    let (_cgroups, dir) = Cgroups::make("docker", &format!("system.slice/docker-{ID}.scope"));
    let run = spawn_in(&dir);
    let (parent, child) = program_faults(&run);
    assert!(!child.is_empty(), "the forked child's write is reported");
    let id = std::fs::metadata(&dir).unwrap().ino();
    for fault in parent.iter().chain(&child) {
        assert_eq!(fault["cgroup"]["id"], id, "{fault}");
        assert_eq!(fault["cgroup"]["path"], relative(&dir), "{fault}");
        assert_eq!(
            fault["container"],
            json!({"id": ID, "runtime": "docker", "name": null, "image": null}),
            "{fault}"
        );
        assert_eq!(fault["kubernetes"], Value::Null, "{fault}");
    }
    // The shell, before it moved itself into the container's cgroup, was on the host.
    let host_shell = run
        .of_kind("region_mapped")
        .into_iter()
        .find(|e| e["comm"] == "sh" && e["cgroup"]["id"] != id)
        .expect("the shell's own mappings, made before it moved");
    assert_eq!(host_shell["container"], Value::Null, "{host_shell}");
}

#[test]
fn events_name_the_pod_and_container_of_a_kubernetes_cgroup() {
    let pod = POD.replace('-', "_");
    let (_cgroups, dir) = Cgroups::make(
        "pod",
        &format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{pod}.slice/cri-containerd-{ID}.scope"
        ),
    );
    let run = spawn_in(&dir);
    let (parent, child) = program_faults(&run);
    for fault in parent.iter().chain(&child) {
        assert_eq!(fault["container"]["id"], ID, "{fault}");
        assert_eq!(fault["container"]["runtime"], "containerd", "{fault}");
        assert_eq!(
            fault["kubernetes"],
            json!({"pod_uid": POD, "pod_name": null, "pod_namespace": null, "container_name": null}),
            "{fault}"
        );
    }
}

#[test]
fn report_roots_flame_graph_stacks_at_their_container() {
    let (_cgroups, dir) = Cgroups::make("report", &format!("system.slice/docker-{ID}.scope"));
    let run = spawn_in(&dir);
    let stream: String = run.events.iter().map(|e| format!("{e}\n")).collect();
    let folded = tempfile::NamedTempFile::new().unwrap();
    let mut report = std::process::Command::new(common::AGENT)
        .args(["report", "--group-by", "container", "--folded"])
        .arg(folded.path())
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    report
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(report.wait().unwrap().success());
    let folded = std::fs::read_to_string(folded.path()).unwrap();
    let in_container = |l: &&str| l.starts_with(&format!("docker {};", &ID[..12]));
    let writes = |l: &str| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap();
    let (parent, child) = program_faults(&run);
    let program_writes: u64 = parent
        .iter()
        .chain(&child)
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum();
    let container_writes: u64 = folded.lines().filter(in_container).map(writes).sum();
    assert!(
        container_writes >= program_writes,
        "the program's {program_writes} writes are under its container: {folded}"
    );
    assert!(
        folded.lines().any(|l| l.starts_with("[host];")),
        "the shell's writes before it moved are on the host: {folded}"
    );
}

/// `workload anon 2` started in cgroup `dir` now; returns where it wrote.
fn anon_in(dir: &Path) -> u64 {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec {} anon 2",
            dir.display(),
            workload().display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success());
    common::written_start(&out)
}

#[test]
fn container_scope_takes_running_and_later_containers_and_nothing_else() {
    // Two containers whose ids share a prefix no other test uses, one with another.
    let first = format!("c0ffee{}", &ID[6..]);
    let later = format!("c0ffee{}", &ID[6..].replace('4', "7"));
    let other = format!("9d1e{}", &ID[4..]);
    let (_running_dir, running) =
        Cgroups::make("scope-a", &format!("system.slice/docker-{first}.scope"));
    // A process in the first container, started before the agent.
    let mut before = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo $$ > {}/cgroup.procs && exec {} wait-anon 2",
            running.display(),
            workload().display()
        ))
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let agent = common::Agent::start(&["run", "--every-event", "--container", "c0ffee"]);
    agent.wait_for("agent_started", |e| e["event"] == "agent_started");
    // Made after the agent started: found through the kernel's cgroup_mkdir report.
    let (_later_dir, later_dir) =
        Cgroups::make("scope-b", &format!("system.slice/docker-{later}.scope"));
    let (_other_dir, other_dir) =
        Cgroups::make("scope-c", &format!("system.slice/docker-{other}.scope"));
    // A runtime makes the cgroup well before it starts the container's process.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let in_later = anon_in(&later_dir);
    anon_in(&other_dir);
    let on_host = std::process::Command::new(workload())
        .args(["anon", "2"])
        .output()
        .unwrap();
    assert!(on_host.status.success());
    {
        use std::io::Write;
        before.stdin.take().unwrap().write_all(b"go\n").unwrap();
    }
    let in_running = common::written_start(&before.wait_with_output().unwrap());
    let run = agent.stop();
    run.assert_accounting();
    let faults_at = |start: u64, container: &str| {
        run.of_kind("write_fault")
            .into_iter()
            .filter(|e| {
                e["address"].as_str().map(common::hex) == Some(start)
                    && e["container"]["id"] == container
            })
            .count()
    };
    // `anon` writes its first page, maps it again and rewrites it.
    assert_eq!(
        faults_at(in_running, &first),
        2,
        "the container running at start"
    );
    assert_eq!(faults_at(in_later, &later), 2, "the container made later");
    let elsewhere = run
        .of_kind("write_fault")
        .into_iter()
        .filter(|e| e["container"]["id"] == other.as_str() || e["container"].is_null())
        .count();
    assert_eq!(elsewhere, 0, "only the named containers are audited");
    let counters = &run.stopped()["counters"];
    assert_eq!(counters["agent"]["containers_scoped"], 2, "{counters}");
}
