//! `--crash-only`'s capture of a crashing process, which the crash uprobe stopped with
//! SIGSTOP: every thread is seized with ptrace, then the process gets SIGCONT at
//! once. Seized threads stay in ptrace-stop, and from then on the kernel releases them
//! if the agent dies, so only the few milliseconds from the record to the SIGCONT can
//! leave the process stopped. Each thread's registers and stack are read while it is
//! held; then every thread is detached and the runtime goes on crashing.
//!
//! ptrace belongs to the thread that seized: this runs on the agent's one reader
//! thread. Cost: ~0.1 ms per thread, plus the stack reads.

use std::{
    collections::HashSet,
    fs::File,
    os::unix::fs::FileExt,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nix::{
    errno::Errno,
    sys::{
        ptrace,
        signal::{Signal, kill},
        wait::{WaitPidFlag, WaitStatus, waitpid},
    },
    unistd::Pid,
};

/// How long a seized thread may take to stop before it is given up.
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// Test hook: pause this many milliseconds with the threads seized, so a test can kill
/// the agent mid-capture and see the process go on.
const PAUSE_ENV: &str = "MAP_AUDIT_TEST_CAPTURE_PAUSE_MS";

/// The memory of the held process.
pub struct Memory(File);

impl Memory {
    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        let mut bytes = [0u8; 8];
        self.0.read_exact_at(&mut bytes, addr).ok()?;
        Some(u64::from_le_bytes(bytes))
    }
}

/// What a capture got: one `T` per thread read, and the threads it could not read.
pub struct Capture<T> {
    pub threads: Vec<T>,
    pub uncaptured: u64,
    /// CLOCK_MONOTONIC ns just after the SIGCONT: a crash record older than this had
    /// its stop ended by this capture.
    pub resumed_ns: u64,
}

/// Seizes every thread of `pid`, sends SIGCONT when the process was `stopped`, hands
/// each thread (tid, registers) to `read` while it is held, and detaches them all.
pub fn capture<T>(
    pid: u32,
    stopped: bool,
    mut read: impl FnMut(u32, &libc::user_regs_struct, &Memory) -> T,
) -> Result<Capture<T>> {
    let memory = File::open(format!("/proc/{pid}/mem"))
        .map(Memory)
        .with_context(|| format!("cannot read the memory of pid {pid}"))?;
    let mut uncaptured = 0;
    let mut seized = Vec::new();
    let mut seen = HashSet::new();
    // Threads started meanwhile are seized too: list until no new one appears.
    loop {
        let new: Vec<u32> = threads(pid)?
            .into_iter()
            .filter(|t| seen.insert(*t))
            .collect();
        if new.is_empty() {
            break;
        }
        for tid in new {
            let thread = Pid::from_raw(tid as i32);
            match ptrace::seize(thread, ptrace::Options::empty()) {
                Ok(()) => {
                    let _interrupted = ptrace::interrupt(thread);
                    seized.push(thread);
                }
                Err(_) => uncaptured += 1,
            }
        }
    }
    if seized.is_empty() {
        resume(pid, stopped);
        anyhow::bail!("no thread of pid {pid} could be seized (gone, or traced by a debugger)");
    }
    resume(pid, stopped);
    let resumed_ns = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(u64::MAX, |t| {
            t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
        });
    if let Some(pause) = std::env::var(PAUSE_ENV).ok().and_then(|ms| ms.parse().ok()) {
        std::thread::sleep(Duration::from_millis(pause));
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    let mut captured = Vec::new();
    let mut held = Vec::new();
    for thread in seized {
        let Some(signal) = wait_for_stop(pid, thread, deadline) else {
            uncaptured += 1;
            continue;
        };
        held.push((thread, signal));
        match ptrace::getregs(thread) {
            Ok(regs) => captured.push(read(thread.as_raw() as u32, &regs, &memory)),
            Err(_) => uncaptured += 1,
        }
    }
    for (thread, signal) in held {
        // A signal that arrived while held is delivered now; our own SIGSTOP is not.
        let _gone = ptrace::detach(thread, signal.filter(|&s| s != Signal::SIGSTOP));
    }
    Ok(Capture {
        threads: captured,
        uncaptured,
        resumed_ns,
    })
}

fn resume(pid: u32, stopped: bool) {
    if stopped {
        let _gone = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
    }
}

fn threads(pid: u32) -> Result<Vec<u32>> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .with_context(|| format!("pid {pid} is gone"))?;
    Ok(tasks
        .filter_map(|t| t.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// Waits for a seized thread's first stop: `Some(signal to deliver at detach)`, or
/// `None` when it exited or did not stop in time. The stop is also read from
/// /proc: when the agent ran the program, its own waiter for the command may collect
/// the main thread's stop first.
fn wait_for_stop(pid: u32, thread: Pid, deadline: Instant) -> Option<Option<Signal>> {
    loop {
        match waitpid(thread, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => {
                if in_ptrace_stop(pid, thread) {
                    return Some(None);
                }
                if Instant::now() >= deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(WaitStatus::Stopped(_, signal)) => return Some(Some(signal)),
            Ok(WaitStatus::PtraceEvent(..)) => return Some(None),
            Err(Errno::EINTR) => {}
            _ => return None,
        }
    }
}

/// State `t` in /proc/PID/task/TID/stat: stopped by its tracer.
fn in_ptrace_stop(pid: u32, thread: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{thread}/stat"))
        .is_ok_and(|stat| stat.rsplit(") ").next().is_some_and(|s| s.starts_with('t')))
}
