//! The embedded object's programs and maps by name (with errors that say how to
//! rebuild it), raw tracepoint attachment, and the record of each hook attached.

use anyhow::{Context, Result, anyhow};
use aya::{Ebpf, programs::RawTracePoint};
use serde::Serialize;

/// A hook the agent attached, for `agent_started`.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AttachedHook {
    /// What the hook is for: "mmap", "munmap", "fork", "exit", "fault_user".
    pub role: &'static str,
    /// Attach type and point, e.g. "raw_tracepoint:page_fault_user".
    pub hook: String,
    /// Why this hook was chosen.
    pub reason: String,
}

/// The program `name` of the object.
pub fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut aya::programs::Program> {
    ebpf.program_mut(name)
        .ok_or_else(|| anyhow!("the embedded eBPF object has no program `{name}`; rebuild with `cargo xtask build-ebpf`"))
}

/// The map `name`, taken out of the object (the caller owns it from here).
pub fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or_else(|| {
        anyhow!(
            "the embedded eBPF object has no map `{name}`; rebuild with `cargo xtask build-ebpf`"
        )
    })
}

/// Loads the raw tracepoint program `name` and attaches it to `point`.
pub fn attach_raw(ebpf: &mut Ebpf, name: &str, point: &str) -> Result<()> {
    let program: &mut RawTracePoint = program(ebpf, name)?.try_into()?;
    program
        .load()
        .with_context(|| format!("the kernel rejected the {name} program"))?;
    program
        .attach(point)
        .with_context(|| format!("attaching to raw tracepoint {point} failed"))?;
    Ok(())
}
