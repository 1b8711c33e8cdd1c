//! Which Go runtime functions Go mode hooks, where, and attaching the uprobes for one
//! process. The map-write names hold from Go 1.17 through 1.24 (Swiss-table maps keep
//! them through linkname); the linker drops those a program never calls, so each
//! binary has its own subset.

use std::path::Path;

use anyhow::{Context, Result, bail};
use aya::{
    Ebpf,
    programs::{
        UProbe,
        uprobe::{UProbeAttachLocation, UProbeAttachPoint, UProbeScope},
    },
};
use map_audit_common::go_maps::uprobe_cookie;
use serde::Serialize;

use super::{go_binary::GoBinary, pclntab::FunctionTable, return_sites};
use crate::kernel::programs;

/// (function, operation) of every map write Go mode watches.
const MAP_WRITES: [(&str, Operation); 11] = [
    ("runtime.mapassign", Operation::Assign),
    ("runtime.mapassign_fast32", Operation::Assign),
    ("runtime.mapassign_fast32ptr", Operation::Assign),
    ("runtime.mapassign_fast64", Operation::Assign),
    ("runtime.mapassign_fast64ptr", Operation::Assign),
    ("runtime.mapassign_faststr", Operation::Assign),
    ("runtime.mapdelete", Operation::Delete),
    ("runtime.mapdelete_fast32", Operation::Delete),
    ("runtime.mapdelete_fast64", Operation::Delete),
    ("runtime.mapdelete_faststr", Operation::Delete),
    ("runtime.mapclear", Operation::Clear),
];

/// Where the runtime dies or unwinds: `fatal` reports "concurrent map writes" since
/// Go 1.19, `throw` before (and for the runtime's own errors), `gopanic` unwinds past
/// a write's returns.
const CRASHES: [(&str, Operation); 3] = [
    ("runtime.fatal", Operation::Fatal),
    ("runtime.throw", Operation::Fatal),
    ("runtime.gopanic", Operation::Panic),
];

/// `--crash-only`: where the process ends. Every fatal error goes through `fatal` or
/// `throw` (1.17-1.27), every unrecovered panic through `fatalpanic`.
const FATAL_PATHS: [(&str, Operation); 3] = [
    ("runtime.fatal", Operation::Fatal),
    ("runtime.throw", Operation::Fatal),
    ("runtime.fatalpanic", Operation::FatalPanic),
];

/// What Go mode hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every map write's entry and returns, and the crash paths: races found exactly.
    Exact,
    /// The fatal paths alone: nothing per map write; a crash stops the process for the
    /// agent to read every thread.
    CrashOnly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Assign,
    Delete,
    Clear,
    Fatal,
    Panic,
    /// `runtime.fatalpanic`: a panic nothing recovered.
    FatalPanic,
}

impl Operation {
    fn is_crash(self) -> bool {
        matches!(
            self,
            Operation::Fatal | Operation::Panic | Operation::FatalPanic
        )
    }
}

/// A function of the Go map runtime (access, assign, delete, iterate, grow): classic
/// maps' `runtime.map*`, Swiss-table maps' `internal/runtime/maps.*` (Go 1.24+).
pub fn is_map_function(name: &str) -> bool {
    name.starts_with("runtime.map") || name.starts_with("internal/runtime/maps.")
}

/// A runtime function Go mode hooks.
// Its index in `Hooks::list` is the uprobes' cookie.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Hook {
    pub function: String,
    pub operation: Operation,
    #[serde(serialize_with = "crate::commands::go_maps::events::hex_serde")]
    #[schemars(with = "crate::output::schema::Address")]
    pub entry: u64,
    /// Return instructions with a uprobe (map writes only).
    pub return_probes: usize,
    #[serde(skip)]
    returns: Vec<u64>,
}

pub struct Hooks {
    pub list: Vec<Hook>,
    pub mode: Mode,
}

impl Hooks {
    /// Finds the hooks in `binary`; fails when it has nothing the mode needs.
    pub fn find(binary: &GoBinary, functions: &FunctionTable, mode: Mode) -> Result<Self> {
        let wanted: Vec<&(&str, Operation)> = match mode {
            Mode::Exact => MAP_WRITES.iter().chain(&CRASHES).collect(),
            Mode::CrashOnly => FATAL_PATHS.iter().collect(),
        };
        let mut list = Vec::new();
        for (name, operation) in wanted {
            let Some(function) = functions.by_name(name) else {
                continue;
            };
            let returns = if operation.is_crash() {
                Vec::new()
            } else {
                let code = binary
                    .read_virtual(function.entry, function.end - function.entry)
                    .with_context(|| format!("the code of {name} is not in the file"))?;
                let returns = return_sites::find(code, function.entry);
                if returns.is_empty() {
                    bail!(
                        "{name} has no return instruction go-maps can find; its writes could never close"
                    );
                }
                returns
            };
            list.push(Hook {
                function: name.to_string(),
                operation: *operation,
                entry: function.entry,
                return_probes: returns.len(),
                returns,
            });
        }
        if mode == Mode::Exact && !list.iter().any(|h| h.operation == Operation::Assign) {
            bail!(
                "{} has none of the runtime's map-assign functions: it writes no Go map go-maps could watch",
                binary.path.display()
            );
        }
        if mode == Mode::CrashOnly && !list.iter().any(|h| h.operation == Operation::Fatal) {
            bail!(
                "{} has neither runtime.fatal nor runtime.throw: go-maps --crash-only has no fatal path to hook",
                binary.path.display()
            );
        }
        Ok(Self { list, mode })
    }

    pub fn get(&self, index: u32) -> Option<&Hook> {
        self.list.get(index as usize)
    }

    /// Attaches every uprobe for `scope` (one process, or every process running the
    /// binary: `--all-go`). `target` is the path the kernel resolves to the binary's
    /// inode; `goid_offset` goes in each cookie.
    pub fn attach(
        &self,
        ebpf: &mut Ebpf,
        binary: &GoBinary,
        target: &Path,
        scope: UProbeScope,
        goid_offset: u32,
    ) -> Result<usize> {
        let mut probes = 0;
        for (index, hook) in self.list.iter().enumerate() {
            let (entry_program, return_program) = match (hook.operation, self.mode) {
                (Operation::Fatal, Mode::Exact) => ("go_runtime_fatal", None),
                (Operation::Fatal, Mode::CrashOnly) => ("go_runtime_fatal_stop", None),
                (Operation::FatalPanic, _) => ("go_runtime_fatal_panic_stop", None),
                (Operation::Panic, _) => ("go_runtime_panic", None),
                _ => ("go_map_write_entry", Some("go_map_write_return")),
            };
            let sites = std::iter::once((entry_program, hook.entry)).chain(
                return_program
                    .into_iter()
                    .flat_map(|p| hook.returns.iter().map(move |&r| (p, r))),
            );
            for (program, address) in sites {
                let offset = binary.file_offset(address).with_context(|| {
                    format!(
                        "{} at {address:#x} is not in a loaded segment",
                        hook.function
                    )
                })?;
                let uprobe: &mut UProbe = programs::program(ebpf, program)?.try_into()?;
                if uprobe.fd().is_err() {
                    uprobe
                        .load()
                        .with_context(|| format!("the kernel rejected the {program} program"))?;
                }
                let point = UProbeAttachPoint {
                    location: UProbeAttachLocation::AbsoluteOffset(offset),
                    cookie: Some(uprobe_cookie(index as u32, goid_offset)),
                };
                uprobe
                    .attach(point, target, scope)
                    .with_context(|| {
                        format!(
                            "attaching a uprobe to {} (+{:#x}) failed; the kernel needs CONFIG_UPROBE_EVENTS",
                            hook.function,
                            address - hook.entry
                        )
                    })?;
                probes += 1;
            }
        }
        Ok(probes)
    }
}
