//! What a stopped agent leaves in the kernel: nothing. Its programs, links and maps are
//! held only by its file descriptors (nothing is pinned), so they go with the process,
//! whether it stops on SIGTERM (after its final stats) or is SIGKILLed mid-stream
//! (real eBPF; needs root).

mod common;

use std::{
    os::unix::process::ExitStatusExt,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{Agent, workload};

/// `bpf(2)` commands that open an object by id (ENOENT once it is freed).
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;

/// The BPF objects a process holds, by id, from its `/proc/PID/fdinfo`.
#[derive(Debug, Default)]
struct BpfObjects {
    programs: Vec<u32>,
    maps: Vec<u32>,
    links: Vec<u32>,
}

fn bpf_objects_of(pid: u32) -> BpfObjects {
    let mut objects = BpfObjects::default();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(info) = std::fs::read_to_string(entry.unwrap().path()) else {
            continue; // closed since the listing
        };
        for (key, value) in info.lines().filter_map(|l| l.split_once(':')) {
            let Ok(id) = value.trim().parse::<u32>() else {
                continue;
            };
            match key {
                "prog_id" => objects.programs.push(id),
                "map_id" => objects.maps.push(id),
                "link_id" => objects.links.push(id),
                _ => {}
            }
        }
    }
    for ids in [&mut objects.programs, &mut objects.maps, &mut objects.links] {
        ids.sort_unstable();
        ids.dedup();
    }
    objects
}

/// Whether the kernel still has the object `id` (opens and closes it).
fn exists(command: libc::c_long, id: u32) -> bool {
    let mut attr = [id, 0, 0, 0];
    let fd = unsafe { libc::syscall(libc::SYS_bpf, command, attr.as_mut_ptr(), 16) };
    if fd >= 0 {
        unsafe { libc::close(fd as i32) };
        return true;
    }
    let err = std::io::Error::last_os_error();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::ENOENT),
        "looking up BPF object {id} failed: {err}"
    );
    false
}

/// Waits (freeing is deferred in the kernel) until none of `held` exists any more.
fn assert_all_released(held: &BpfObjects) {
    let left = || -> Vec<String> {
        let kinds = [
            ("program", BPF_PROG_GET_FD_BY_ID, &held.programs),
            ("map", BPF_MAP_GET_FD_BY_ID, &held.maps),
            ("link", BPF_LINK_GET_FD_BY_ID, &held.links),
        ];
        kinds
            .iter()
            .flat_map(|(kind, command, ids)| {
                ids.iter()
                    .filter(|&&id| exists(*command, id))
                    .map(move |id| format!("{kind} {id}"))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let remaining = left();
        if remaining.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still in the kernel 10 s after the agent exited: {remaining:?}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// A workload that keeps mapping and writing for a few seconds (about a thousand rounds
/// a second: a debug build of the agent keeps up), and an agent auditing it that has
/// printed some of its write faults.
fn agent_mid_stream() -> (Child, Agent, BpfObjects) {
    let target = Command::new(workload())
        .args(["loop", "8", "5000", "1000"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let agent = Agent::start(&[
        "run",
        "--every-event",
        "--pid",
        &target.id().to_string(),
        "--stats-interval",
        "0",
    ]);
    agent.wait_for("a write fault", |e| e["event"] == "write_fault");
    let held = bpf_objects_of(agent.pid());
    assert!(
        !held.programs.is_empty() && !held.maps.is_empty() && !held.links.is_empty(),
        "the running agent holds programs, maps and links: {held:?}"
    );
    assert!(
        held.links
            .iter()
            .all(|&id| exists(BPF_LINK_GET_FD_BY_ID, id)),
        "the lookup by id sees the running agent's links"
    );
    (target, agent, held)
}

#[test]
fn sigterm_mid_stream_prints_final_stats_and_leaves_nothing_in_the_kernel() {
    let (mut target, mut agent, held) = agent_mid_stream();
    unsafe { libc::kill(agent.pid() as i32, libc::SIGTERM) };
    let run = agent.wait();
    assert_eq!(run.status.code(), Some(0), "stderr:\n{}", run.stderr);
    run.stopped();
    run.assert_accounting();
    assert_all_released(&held);
    let _ = target.kill();
    let _ = target.wait();
}

#[test]
fn sigkill_mid_stream_leaves_nothing_in_the_kernel() {
    let (mut target, mut agent, held) = agent_mid_stream();
    unsafe { libc::kill(agent.pid() as i32, libc::SIGKILL) };
    assert_eq!(agent.wait_status().signal(), Some(libc::SIGKILL));
    assert_all_released(&held);
    let _ = target.kill();
    let _ = target.wait();
}
