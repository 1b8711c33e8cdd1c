//! `go-maps --all-go`: the crash hooks on every Go program of the host, running or
//! started later. At the start every process's program is looked at (/proc/*/exe),
//! then the program of each exec (`go_process_exec`'s record), and /proc again each
//! stats interval (for exec records lost to a full ring). A program is looked at
//! once per file (device and inode): its uprobes are on the file, so every process
//! running it, now or later, is covered without a look of its own.
//!
//! Cost: a stat per exec on the host (and per process at each rescan), the ELF headers of a program not seen before,
//! and for a Go one its function table (milliseconds). A program first run after the
//! start that crashes before its hooks are on (the milliseconds after its exec) goes
//! unseen.

use std::{collections::HashMap, path::Path, sync::Arc};

use aya::{Ebpf, programs::uprobe::UProbeScope};
use map_audit_common::region::FileKey;

use super::{
    counters::GoAgentCounters,
    events::{Found, GoEvent, ProgramHooked, ProgramRefused},
    go_binary::is_go_program,
    hooks::Mode,
    program::GoProgram,
};
use crate::stacks::unwind::tables::key_of_path;

#[derive(Default)]
pub struct AllGo {
    /// By file: the program, or `None` when it is not Go or was refused.
    programs: HashMap<FileKey, Option<Arc<GoProgram>>>,
}

impl AllGo {
    /// The programs of the processes running now: an event for each Go one.
    pub fn scan(&mut self, ebpf: &mut Ebpf, counters: &mut GoAgentCounters) -> Vec<GoEvent> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let pids = entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok());
        pids.filter_map(|pid| self.look(ebpf, pid, Found::Running, counters))
            .collect()
    }

    /// Looks at `pid`'s program: hooks it when it is a Go program not seen before, and
    /// says so (or why not).
    pub fn look(
        &mut self,
        ebpf: &mut Ebpf,
        pid: u32,
        found: Found,
        counters: &mut GoAgentCounters,
    ) -> Option<GoEvent> {
        let target = format!("/proc/{pid}/exe");
        let target = Path::new(&target);
        // Kernel threads have no program; a process gone already is not looked at.
        let key = key_of_path(target)?;
        if self.programs.contains_key(&key) {
            return None;
        }
        if !is_go_program(target) {
            self.programs.insert(key, None);
            counters.programs_not_go += 1;
            return None;
        }
        let exe = std::fs::read_link(target).map_or_else(
            |_| target.display().to_string(),
            |p| p.display().to_string(),
        );
        let hooked =
            GoProgram::open(target, &exe, Mode::CrashOnly).and_then(|(mut program, binary)| {
                program.exe.clone_from(&exe);
                let uprobes = program.attach(ebpf, &binary, target, UProbeScope::AllProcesses)?;
                Ok((program, uprobes))
            });
        match hooked {
            Ok((program, uprobes)) => {
                counters.programs_hooked += 1;
                let event = ProgramHooked {
                    hooked: program.hooked(pid, uprobes),
                    found,
                };
                self.programs.insert(key, Some(Arc::new(program)));
                Some(GoEvent::ProgramHooked(event))
            }
            // Gone while being looked at: the next process running it is looked at.
            Err(_) if key_of_path(target) != Some(key) => None,
            Err(err) => {
                counters.programs_refused += 1;
                self.programs.insert(key, None);
                Some(GoEvent::ProgramRefused(ProgramRefused {
                    pid,
                    exe,
                    found,
                    reason: format!("{err:#}"),
                }))
            }
        }
    }

    /// The hooked program `pid` runs.
    pub fn program_of(&self, pid: u32) -> Option<Arc<GoProgram>> {
        let key = key_of_path(Path::new(&format!("/proc/{pid}/exe")))?;
        self.programs.get(&key)?.clone()
    }
}
