//! What the eBPF programs need of the kernel beyond privileges, BTF and tracepoints,
//! probed the way libbpf and bpftool do (load a two-instruction program, read the
//! verifier's answer), not guessed from the release string: distribution kernels
//! backport features, and a release number says nothing about a custom build. The
//! answer picks one of the two embedded objects (`ProgramObject`), or refuses the run.
//!
//! Cost: one map creation and five tiny program loads, once at start and in
//! `map-audit check` (all of `check` takes 40-80 ms here).

use std::os::fd::{FromRawFd, OwnedFd};

use serde::Serialize;

use aya::{
    maps::MapType,
    programs::ProgramType,
    sys::{BpfHelper, is_helper_supported, is_map_supported},
};

/// One kernel feature the programs use.
#[derive(Debug, Clone)]
pub struct Feature {
    pub name: &'static str,
    /// The mainline release that brought it (for the reader; not what is checked).
    pub since: &'static str,
    /// `None`: the probe itself failed, so the feature is not held against the kernel
    /// (loading the programs then says what is wrong).
    pub present: Option<bool>,
    /// The object for older kernels does without it.
    pub older_object_avoids: bool,
}

/// Which embedded object runs: both have the same programs, maps and records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProgramObject {
    /// Built for 5.17+: loops under `bpf_loop`, fetch-and-add and compare-and-exchange,
    /// `bpf_find_vma`, `bpf_task_pt_regs`.
    Linux5_17,
    /// Built for 5.10 to 5.16 (feature `kernel-5-10`): bounded loops, ids and locks
    /// from plain atomic adds, the VMA list, the registers at the kernel stack's top.
    Linux5_10,
}

impl ProgramObject {
    /// Frames the kernel's walk of a user stack keeps at most.
    pub fn max_stack_depth(self) -> usize {
        match self {
            Self::Linux5_17 => map_audit_common::MAX_STACK_DEPTH,
            Self::Linux5_10 => map_audit_common::MAX_STACK_DEPTH_5_10,
        }
    }

    /// What runs differently from the 5.17+ object, for `agent_started` and `check`.
    pub fn degraded(self) -> &'static [&'static str] {
        match self {
            Self::Linux5_17 => &[],
            Self::Linux5_10 => &[
                "user stacks stop at 32 frames, not 64 (stack_end depth_limit)",
                "an munmap or mprotect over more than 2 regions is finished by the agent (ranges_handed_to_agent)",
                "a region edit waits for another thread's edit of the same process for 256 tries, not 65536 (table_lock_timeouts)",
                "Go mode (go-maps) is refused: it needs Linux 5.17 (bpf_loop, bpf_get_attach_cookie)",
            ],
        }
    }
}

/// The object for these features, or the one sentence the run is refused with.
pub fn choose(release: &str, features: &[Feature]) -> Result<ProgramObject, String> {
    if let Some(sentence) = refusal(release, features.iter().filter(|f| !f.older_object_avoids)) {
        return Err(sentence);
    }
    if features.iter().any(|f| f.present == Some(false)) {
        Ok(ProgramObject::Linux5_10)
    } else {
        Ok(ProgramObject::Linux5_17)
    }
}

/// Probes every feature. Needs the privileges a run needs.
pub fn probe() -> Vec<Feature> {
    let helper = |name, since, id: BpfHelper| Feature {
        name,
        since,
        present: is_helper_supported(ProgramType::TracePoint, id)
            .inspect_err(|err| log::debug!("probing {name} failed: {err}"))
            .ok(),
        older_object_avoids: true,
    };
    vec![
        Feature {
            name: "ring buffer maps",
            since: "5.8",
            present: is_map_supported(MapType::RingBuf).ok(),
            older_object_avoids: false,
        },
        helper(
            "bpf_get_current_task_btf",
            "5.11",
            BpfHelper::BPF_FUNC_get_current_task_btf,
        ),
        Feature {
            name: "atomic fetch-and-add and compare-and-exchange",
            since: "5.12",
            present: atomics_supported(),
            older_object_avoids: true,
        },
        helper("bpf_task_pt_regs", "5.15", BpfHelper::BPF_FUNC_task_pt_regs),
        helper("bpf_find_vma", "5.17", BpfHelper::BPF_FUNC_find_vma),
        helper("bpf_loop", "5.17", BpfHelper::BPF_FUNC_loop),
    ]
}

/// The one sentence a run is refused with when some of `features` are missing, or
/// `None`.
fn refusal<'a>(release: &str, features: impl Iterator<Item = &'a Feature>) -> Option<String> {
    let missing: Vec<String> = features
        .filter(|f| f.present == Some(false))
        .map(|f| format!("{} (Linux {})", f.name, f.since))
        .collect();
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "this kernel ({release}) lacks {}, which map-audit's programs use, so it cannot run here",
        missing.join(", ")
    ))
}

/// `BPF_STX | BPF_ATOMIC | BPF_DW`, and the operations in its immediate.
const ATOMIC_DW: u8 = 0xdb;
const ATOMIC_FETCH_ADD: i32 = 0x01;
const ATOMIC_CMPXCHG: i32 = 0xf1;

/// One instruction: (code, dst | src << 4, offset, immediate).
#[repr(C)]
struct Insn(u8, u8, i16, i32);

/// The start of `union bpf_attr` for `BPF_PROG_LOAD`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Whether the verifier takes a fetch-and-add and a compare-and-exchange on the stack
/// (5.12's atomics; before, the only atomic was an add without result).
fn atomics_supported() -> Option<bool> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACEPOINT: u32 = 5;
    let insns = [
        Insn(0x7a, 10, -8, 0),                              // *(u64 *)(r10 - 8) = 0
        Insn(0xb7, 1, 0, 1),                                // r1 = 1
        Insn(ATOMIC_DW, 10 | 1 << 4, -8, ATOMIC_FETCH_ADD), // r1 = fetch_add(r10 - 8, r1)
        Insn(0xb7, 0, 0, 0),                                // r0 = 0
        Insn(ATOMIC_DW, 10 | 1 << 4, -8, ATOMIC_CMPXCHG),   // r0 = cmpxchg(r10 - 8, r0, r1)
        Insn(0xb7, 0, 0, 0),                                // r0 = 0
        Insn(0x95, 0, 0, 0),                                // exit
    ];
    let license = c"GPL";
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACEPOINT,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `attr` and what it points to outlive the call; the kernel reads only
    // `size_of::<ProgLoadAttr>()` bytes of it.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &raw const attr,
            size_of::<ProgLoadAttr>(),
        )
    };
    if fd >= 0 {
        // SAFETY: a new descriptor the kernel just returned, owned here only.
        drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        return Some(true);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        // The verifier's answer to an instruction it does not know.
        Some(libc::EINVAL) => Some(false),
        other => {
            log::debug!("probing atomics failed: errno {other:?}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature(name: &'static str, since: &'static str, present: Option<bool>) -> Feature {
        Feature {
            name,
            since,
            present,
            older_object_avoids: name != "ring buffer maps",
        }
    }

    #[test]
    fn a_kernel_with_everything_runs_the_5_17_object() {
        let features = [
            feature("ring buffer maps", "5.8", Some(true)),
            feature("bpf_loop", "5.17", Some(true)),
        ];
        assert_eq!(choose("6.1.0", &features), Ok(ProgramObject::Linux5_17));
    }

    #[test]
    fn a_kernel_without_the_5_17_features_runs_the_older_object() {
        let features = [
            feature("ring buffer maps", "5.8", Some(true)),
            feature("bpf_find_vma", "5.17", Some(false)),
            feature("bpf_loop", "5.17", Some(false)),
        ];
        assert_eq!(
            choose("5.10.0-46-cloud-amd64", &features),
            Ok(ProgramObject::Linux5_10)
        );
    }

    #[test]
    fn what_neither_object_does_without_is_named_in_one_sentence() {
        let features = [
            feature("ring buffer maps", "5.8", Some(false)),
            feature("bpf_find_vma", "5.17", Some(false)),
            feature("bpf_task_pt_regs", "5.15", None),
        ];
        assert_eq!(
            choose("5.4.0-216-generic", &features),
            Err("this kernel (5.4.0-216-generic) lacks ring buffer maps (Linux 5.8), which map-audit's programs use, so it cannot run here".into())
        );
    }

    #[test]
    fn a_failed_probe_is_not_held_against_the_kernel() {
        let features = [
            feature("ring buffer maps", "5.8", None),
            feature("bpf_loop", "5.17", None),
        ];
        assert_eq!(choose("6.1.0", &features), Ok(ProgramObject::Linux5_17));
    }
}
