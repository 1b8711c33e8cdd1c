//! What to audit: existing pids, and a command the agent starts itself. The command is
//! forked, held before `exec` until its pid is in the kernel's scope, then released, so
//! not one of its mappings is missed.

use std::{
    ffi::CString,
    os::fd::{AsRawFd, OwnedFd},
    os::unix::ffi::OsStrExt,
    path::Path,
};

use anyhow::{Context, Result, bail};
use nix::{
    sys::wait::{WaitStatus, waitpid},
    unistd::{ForkResult, Pid, fork, pipe2, write},
};

/// Fails with one sentence when a pid does not name a running process.
pub fn check_pids(pids: &[u32]) -> Result<()> {
    for &pid in pids {
        if pid == 0 || !Path::new(&format!("/proc/{pid}")).is_dir() {
            bail!("no process has pid {pid}; check it with `ps -p {pid}`");
        }
    }
    Ok(())
}

/// A forked command waiting at its gate.
pub struct HeldCommand {
    pub pid: u32,
    /// `None` once opened.
    gate: Option<OwnedFd>,
    /// The child stops at its exec (traced) until [`resume`](Self::resume).
    stops_at_exec: bool,
}

impl HeldCommand {
    /// Forks `command`; the child waits until [`release_and_wait`](Self::release_and_wait).
    pub fn spawn(command: &[String]) -> Result<Self> {
        Self::spawn_with(command, false)
    }

    /// `spawn`, and the child stops again once its exec has loaded the program (so
    /// what depends on its load address can be set before its first instruction):
    /// [`run_to_exec`](Self::run_to_exec), then [`resume`](Self::resume).
    pub fn spawn_stopping_at_exec(command: &[String]) -> Result<Self> {
        Self::spawn_with(command, true)
    }

    fn spawn_with(command: &[String], stops_at_exec: bool) -> Result<Self> {
        let program = resolve_program(&command[0])?;
        let argv: Vec<CString> = command
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .context("a command argument contains a NUL byte")?;
        let (gate_read, gate_write) =
            pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the start gate pipe failed")?;
        // SAFETY: the child only calls async-signal-safe functions (read, execv, _exit)
        // on memory prepared before the fork.
        match unsafe { fork() }.context("fork failed")? {
            ForkResult::Child => {
                drop(gate_write);
                let mut byte = 0u8;
                let n = unsafe { libc::read(gate_read.as_raw_fd(), (&raw mut byte).cast(), 1) };
                // A traced child gets SIGTRAP at its exec: it stops for the agent.
                if n == 1
                    && (!stops_at_exec
                        || unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) } == 0)
                {
                    // Returns only on failure: the child exits 127, as a shell's does.
                    let _ = nix::unistd::execv(&program, &argv);
                }
                unsafe { libc::_exit(127) }
            }
            ForkResult::Parent { child } => {
                drop(gate_read);
                Ok(Self {
                    pid: child.as_raw() as u32,
                    gate: Some(gate_write),
                    stops_at_exec,
                })
            }
        }
    }

    /// Lets a command spawned with `spawn_stopping_at_exec` exec, and returns once it
    /// has stopped there.
    pub fn run_to_exec(&mut self) -> Result<()> {
        let gate = self
            .gate
            .take()
            .context("the command was released already")?;
        write(&gate, &[1]).context("releasing the command failed")?;
        match waitpid(Pid::from_raw(self.pid as i32), None)
            .context("waiting for the command's exec failed")?
        {
            WaitStatus::Stopped(_, nix::sys::signal::Signal::SIGTRAP) => Ok(()),
            WaitStatus::Exited(_, 127) => bail!("the command could not be started (exec failed)"),
            other => bail!("the command did not stop at its exec ({other:?})"),
        }
    }

    /// Lets a command stopped at its exec run (stops tracing it).
    pub fn resume(&self) -> Result<()> {
        if unsafe { libc::ptrace(libc::PTRACE_DETACH, self.pid as i32, 0, 0) } != 0 {
            return Err(std::io::Error::last_os_error()).context("resuming the command failed");
        }
        Ok(())
    }

    /// Lets the command exec, and waits for it on a thread of its own: its exit code
    /// (as [`wait_exit_code`] gives it) arrives on the returned receiver.
    pub fn release_and_wait(&self) -> Result<tokio::sync::oneshot::Receiver<Result<i32>>> {
        let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
        let pid = self.pid;
        std::thread::Builder::new()
            .name("command-wait".into())
            .spawn(move || {
                // The receiver is gone only when the agent stopped waiting.
                let _ = exit_tx.send(wait_exit_code(pid));
            })
            .context("starting the command waiter failed")?;
        if let Some(gate) = &self.gate {
            write(gate, &[1]).context("releasing the command failed")?;
        } else if self.stops_at_exec {
            self.resume()?;
        }
        Ok(exit_rx)
    }
}

/// Tells (on the returned receiver) when `pid`, not a child of the agent, has ended:
/// a thread waits on its pidfd.
pub fn when_gone(pid: u32) -> Result<tokio::sync::oneshot::Receiver<()>> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ESRCH) {
            // Already gone: a program that crashes at once can end before the agent
            // follows it, and the agent then stops as it would have.
            let (gone_tx, gone_rx) = tokio::sync::oneshot::channel();
            gone_tx.send(()).expect("the receiver is held here");
            return Ok(gone_rx);
        }
        return Err(err).with_context(|| format!("following pid {pid} failed (pidfd_open)"));
    }
    // SAFETY: pidfd_open returned a new descriptor that nothing else owns.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let (gone_tx, gone_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("pid-wait".into())
        .spawn(move || {
            let mut poll = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // Readable once the process has exited; EINTR retries.
            while unsafe { libc::poll(&mut poll, 1, -1) } < 0 {}
            let _ = gone_tx.send(());
        })
        .context("starting the pid waiter failed")?;
    Ok(gone_rx)
}

/// Waits for `pid` and returns its exit code (128 + signal when killed, like a shell).
pub fn wait_exit_code(pid: u32) -> Result<i32> {
    loop {
        match waitpid(Pid::from_raw(pid as i32), None).context("waiting for the command failed")? {
            WaitStatus::Exited(_, code) => return Ok(code),
            WaitStatus::Signaled(_, signal, _) => return Ok(128 + signal as i32),
            _ => continue,
        }
    }
}

/// The file `name` would run, searched in PATH like a shell when it has no '/'.
pub fn program_path(name: &str) -> Result<std::path::PathBuf> {
    let program = resolve_program(name)?;
    Ok(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(
        program.as_bytes(),
    )))
}

/// The executable `name` refers to, searched in PATH like a shell when it has no '/'.
fn resolve_program(name: &str) -> Result<CString> {
    let candidate = if name.contains('/') {
        Some(Path::new(name).to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| is_executable(p))
        })
    };
    match candidate {
        Some(path) if is_executable(&path) => Ok(CString::new(path.as_os_str().as_encoded_bytes())
            .context("the command path contains a NUL byte")?),
        _ => bail!("cannot run `{name}`: no such executable file (searched PATH)"),
    }
}

fn is_executable(path: &Path) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK).is_ok() && path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_already_gone_is_reported_gone_at_once() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let mut gone = when_gone(pid).expect("a pid that ended is not an error");
        assert!(gone.try_recv().is_ok(), "gone before anyone waits");
    }
}
