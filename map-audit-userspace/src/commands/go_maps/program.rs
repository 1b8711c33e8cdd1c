//! One Go program as Go mode hooks it: what is read once from its binary (functions,
//! hooks, goid offset, where a switch to the system stack leaves the goroutine), then
//! shared by every process that runs it.

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result, anyhow, bail};
use aya::{Ebpf, programs::uprobe::UProbeScope};
use object::{Object, ObjectSection};

use super::{
    events::{HookedProgram, Program},
    go_binary::GoBinary,
    go_symbols::GoSymbols,
    goid_offset::{self, GoidOffset},
    hooks::{Hooks, Mode},
    pclntab::FunctionTable,
    race_reports::RaceReports,
    stack_switch::{self, SwitchLayout},
};
use crate::output::clock::Clock;

pub struct GoProgram {
    /// The executable's path as the agent opened it.
    pub exe: String,
    pub go_version: String,
    build_id: Option<String>,
    experiments: Vec<String>,
    stripped: bool,
    pub functions: Arc<FunctionTable>,
    pub hooks: Arc<Hooks>,
    pub goid: GoidOffset,
    pub switch_layout: Option<SwitchLayout>,
}

impl GoProgram {
    /// Reads the program at `path` (`shown` in errors) and finds what `mode` hooks;
    /// the binary is returned for `attach` and can be dropped after it.
    pub fn open(path: &Path, shown: &str, mode: Mode) -> Result<(Self, GoBinary)> {
        let binary = GoBinary::open(path, shown)?;
        if binary.info.goarch != "amd64" {
            bail!(
                "{shown} is a GOARCH={} build; go-maps reads amd64 registers only",
                binary.info.goarch
            );
        }
        let functions = {
            let elf = binary.elf();
            // PIE builds keep it in RELRO, as .data.rel.ro.gopclntab.
            let section = elf
                .section_by_name(".gopclntab")
                .or_else(|| elf.section_by_name(".data.rel.ro.gopclntab"))
                .ok_or_else(|| {
                    anyhow!(
                        "{shown} has no .gopclntab section, so go-maps cannot find its functions"
                    )
                })?;
            let text = elf.section_by_name(".text").map_or(0, |s| s.address());
            FunctionTable::parse(section.data()?, text)
                .with_context(|| format!("reading the function table of {shown} failed"))?
        };
        let hooks = Hooks::find(&binary, &functions, mode)?;
        let goid = goid_offset::find(&binary)?;
        let program = Self {
            exe: binary.path.display().to_string(),
            go_version: binary.info.go_version.clone(),
            build_id: binary.build_id.clone(),
            experiments: binary.info.experiments.clone(),
            stripped: binary.stripped,
            functions: Arc::new(functions),
            hooks: Arc::new(hooks),
            goid,
            switch_layout: stack_switch::find(&binary),
        };
        Ok((program, binary))
    }

    /// Attaches the uprobes to the file `target` names (for a running process,
    /// /proc/PID/exe: it works across mount namespaces), for `scope`.
    pub fn attach(
        &self,
        ebpf: &mut Ebpf,
        binary: &GoBinary,
        target: &Path,
        scope: UProbeScope,
    ) -> Result<usize> {
        self.hooks
            .attach(ebpf, binary, target, scope, self.goid.offset)
    }

    /// The program as seen in process `pid`, and its hooks.
    pub fn hooked(&self, pid: u32, uprobes: usize) -> HookedProgram {
        HookedProgram {
            program: Program {
                pid,
                exe: self.exe.clone(),
                go_version: self.go_version.clone(),
                build_id: self.build_id.clone(),
                experiments: self.experiments.clone(),
                stripped: self.stripped,
            },
            goid_offset: self.goid.offset,
            goid_offset_source: self.goid.source,
            hooks: self.hooks.list.clone(),
            uprobes,
        }
    }

    /// Turns process `pid`'s records into events (names at its own load address).
    pub fn reports(&self, pid: u32, clock: Clock) -> RaceReports {
        let symbols = GoSymbols::new(self.functions.clone(), &self.exe, pid);
        RaceReports::new(symbols, self.hooks.clone(), self.go_version.clone(), clock)
    }
}
