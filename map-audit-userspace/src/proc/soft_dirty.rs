//! Re-arming a process (`--rearm-interval`): clearing its soft-dirty bits write-protects
//! every page table entry it has, so its next write to each page faults again.

use std::{fs, io};

/// Why a process could not be re-armed.
#[derive(Debug, thiserror::Error)]
pub enum RearmError {
    /// It has exited (its pid is gone) or is exiting (a zombie has no memory left).
    #[error("the process has exited")]
    Exited,
    #[error("writing its clear_refs failed: {0}")]
    Refused(io::Error),
}

/// Clears the soft-dirty bits of every page of process `pid` (`echo 4 >
/// /proc/PID/clear_refs`). Costs the kernel one walk of the process's page tables
/// (every resident page, not only audited regions) and a TLB flush; the process then
/// takes one write-protect fault per page it writes again.
pub fn clear_soft_dirty(pid: u32) -> Result<(), RearmError> {
    // A zombie's clear_refs accepts the write and does nothing.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|_| RearmError::Exited)?;
    if matches!(process_state(&stat), Some('Z' | 'X')) {
        return Err(RearmError::Exited);
    }
    match fs::write(format!("/proc/{pid}/clear_refs"), "4") {
        Ok(()) => Ok(()),
        Err(err) if err.raw_os_error() == Some(libc::ESRCH) => Err(RearmError::Exited),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(RearmError::Exited),
        Err(err) => Err(RearmError::Refused(err)),
    }
}

/// The state letter of a /proc/PID/stat line (after the command name, which may hold
/// spaces and parentheses).
fn process_state(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_follows_the_last_parenthesis() {
        assert_eq!(process_state("42 (a) b) Z 1 42"), Some('Z'));
        assert_eq!(process_state("42 (sleep) S 1 42"), Some('S'));
        assert_eq!(process_state("garbage"), None);
    }

    #[test]
    fn a_zombie_is_exited() {
        // A child that exits and is not reaped stays a zombie until `waitpid`.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork failed");
        if child == 0 {
            unsafe { libc::_exit(0) };
        }
        let pid = child as u32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| process_state(&s))
            != Some('Z')
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never became a zombie"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let result = clear_soft_dirty(pid);
        unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
        assert!(matches!(result, Err(RearmError::Exited)), "{result:?}");
    }

    #[test]
    fn a_gone_process_is_exited() {
        // Pid numbers stop well below u32::MAX (pid_max is at most 2^22).
        assert!(matches!(
            clear_soft_dirty(u32::MAX - 1),
            Err(RearmError::Exited)
        ));
    }
}
