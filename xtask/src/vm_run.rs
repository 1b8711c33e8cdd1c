//! `cargo xtask vm-run`: one command, as root, in a matrix guest with the agent on PATH
//! as `map-audit`; its stdout and stderr come back to the host's (each whole, after it
//! ends: the guest has one console) and its exit status becomes ours. For trying the
//! agent on another kernel with one's own program.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::{vm_guest, workspace_root};

/// What the guest prints for the host; a line of the command's output follows it.
const STDOUT_LINE: &str = "@@vm-run:o ";
const STDERR_LINE: &str = "@@vm-run:e ";
const EXIT_STATUS: &str = "@@vm-run:status ";

/// Guest memory: enough for a workload of 1 GiB resident beside the agent.
const MEMORY_MIB: u32 = 3072;

/// Runs `command` in a guest of kernel `label` with `files` copied in; returns its
/// exit status.
pub fn vm_run(label: &str, files: &[PathBuf], command: &[String]) -> Result<i32> {
    let kernel = vm_guest::kernel(label)?;
    vm_guest::ensure_host_tools()?;
    let vm_dir = workspace_root().join("target/vm");
    let agent = vm_guest::build_static_agent(&vm_dir)?;
    let root = vm_dir.join("vm-run-root");
    vm_guest::new_root(&root)?;
    fs::copy(&agent, root.join("bin/map-audit"))?;
    for file in files {
        let file = fs::canonicalize(file)
            .with_context(|| format!("--file {}: no such file", file.display()))?;
        vm_guest::copy_in(&root, &file)?;
        // A dynamically linked program brings its libraries (the guest has none).
        for library in shared_libraries(&file) {
            vm_guest::copy_in(&root, &library)?;
        }
    }
    let init = format!("{}{}", vm_guest::INIT_MOUNTS, run_command_script(command));
    let archive = vm_dir.join("vm-run.cpio");
    vm_guest::pack(&root, &init, &archive)?;
    let vmlinuz = vm_guest::fetch_kernel(&vm_dir.join("kernels"), kernel)?;
    let log = vm_dir.join(format!("vm-run-{label}.log"));
    eprintln!(
        "xtask vm-run: booting {label} under TCG (slow: minutes); serial log in {}",
        log.display()
    );
    vm_guest::boot(&vmlinuz, &archive, &log, MEMORY_MIB, "")?;
    relay(&fs::read_to_string(&log)?).with_context(|| {
        format!(
            "the guest ended before the command did; see {}",
            log.display()
        )
    })
}

/// The guest's /init after the mounts: the command, its output marked line by line.
fn run_command_script(command: &[String]) -> String {
    let quoted: Vec<String> = command
        .iter()
        .map(|arg| format!("'{}'", arg.replace('\'', r"'\''")))
        .collect();
    format!(
        "echo 1 > /proc/sys/kernel/printk\n\
         cd /root\n\
         {} > /tmp/stdout 2> /tmp/stderr\n\
         status=$?\n\
         sed 's/^/{STDOUT_LINE}/' /tmp/stdout\n\
         sed 's/^/{STDERR_LINE}/' /tmp/stderr\n\
         echo \"{EXIT_STATUS}$status\"\n\
         poweroff -f\n",
        quoted.join(" ")
    )
}

/// Writes the command's output to ours; its exit status, `None` if it never ended.
fn relay(serial: &str) -> Option<i32> {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let mut status = None;
    for line in serial.lines() {
        let line = line.trim_end_matches('\r');
        // The console's escape codes can precede a marker on its line.
        if let Some(at) = line.find(STDOUT_LINE) {
            let _ = writeln!(stdout, "{}", &line[at + STDOUT_LINE.len()..]);
        } else if let Some(at) = line.find(STDERR_LINE) {
            let _ = writeln!(stderr, "{}", &line[at + STDERR_LINE.len()..]);
        } else if let Some(at) = line.find(EXIT_STATUS) {
            status = line[at + EXIT_STATUS.len()..].trim().parse().ok();
        }
    }
    status
}

/// The libraries and interpreter `ldd` lists for `file` (none for a static program).
fn shared_libraries(file: &Path) -> Vec<PathBuf> {
    let Ok(output) = Command::new("ldd").arg(file).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let path = match line.split_once("=>") {
                Some((_, resolved)) => resolved.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_quoted_for_the_guest_shell() {
        let script = run_command_script(&["echo".into(), "it's a $HOME".into()]);
        assert!(
            script.contains(r#"'echo' 'it'\''s a $HOME' > /tmp/stdout"#),
            "{script}"
        );
    }

    #[test]
    fn the_status_is_read_after_escape_codes() {
        assert_eq!(relay("boot noise\n\x1b[0m@@vm-run:status 3\r\n"), Some(3));
        assert_eq!(relay("the guest panicked\n"), None);
    }
}
