//! What the eBPF programs need of the kernel beyond privileges, BTF and tracepoints,
//! probed the way libbpf and bpftool do (load a two-instruction program, read the
//! verifier's answer), not guessed from the release string: distribution kernels
//! backport features, and a release number says nothing about a custom build.
//!
//! Cost: one map creation and five tiny program loads, once at start and in
//! `map-audit check` (all of `check` takes 40-80 ms here).

use std::os::fd::{FromRawFd, OwnedFd};

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
}

/// Probes every feature. Needs the privileges a run needs.
pub fn probe() -> Vec<Feature> {
    let helper = |name, since, id: BpfHelper| Feature {
        name,
        since,
        present: is_helper_supported(ProgramType::TracePoint, id)
            .inspect_err(|err| log::debug!("probing {name} failed: {err}"))
            .ok(),
    };
    vec![
        Feature {
            name: "ring buffer maps",
            since: "5.8",
            present: is_map_supported(MapType::RingBuf).ok(),
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
        },
        helper("bpf_task_pt_regs", "5.15", BpfHelper::BPF_FUNC_task_pt_regs),
        helper("bpf_find_vma", "5.17", BpfHelper::BPF_FUNC_find_vma),
        helper("bpf_loop", "5.17", BpfHelper::BPF_FUNC_loop),
    ]
}

/// The one sentence a run is refused with when features are missing, or `None`.
pub fn refusal(release: &str, features: &[Feature]) -> Option<String> {
    let missing: Vec<String> = features
        .iter()
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
        }
    }

    #[test]
    fn missing_features_are_named_in_one_sentence() {
        let features = [
            feature("ring buffer maps", "5.8", Some(true)),
            feature("bpf_find_vma", "5.17", Some(false)),
            feature("bpf_task_pt_regs", "5.15", None),
            feature("bpf_loop", "5.17", Some(false)),
        ];
        assert_eq!(
            refusal("5.10.0-46-cloud-amd64", &features).unwrap(),
            "this kernel (5.10.0-46-cloud-amd64) lacks bpf_find_vma (Linux 5.17), bpf_loop (Linux 5.17), which map-audit's programs use, so it cannot run here"
        );
    }

    #[test]
    fn a_failed_probe_is_not_held_against_the_kernel() {
        let features = [
            feature("ring buffer maps", "5.8", Some(true)),
            feature("bpf_loop", "5.17", None),
        ];
        assert_eq!(refusal("6.1.0", &features), None);
    }
}
