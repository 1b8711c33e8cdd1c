//! What this kernel and this process can do: privileges, BTF, tracepoints, attach types.
//! Used by `map-audit check` and, for the hard requirements, before loading anything.

use std::path::Path;

use anyhow::{Result, anyhow, bail};

use super::feature_probes::{self, ProgramObject};

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Effective capabilities from /proc/self/status.
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether this process may load tracing programs (CAP_SYS_ADMIN, or CAP_BPF and
/// CAP_PERFMON on 5.8+).
pub fn has_bpf_privileges() -> bool {
    let caps = effective_caps();
    let has = |cap: u32| caps & (1 << cap) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

pub fn has_btf() -> bool {
    Path::new("/sys/kernel/btf/vmlinux").exists()
}

/// The running kernel's release string.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// A run refused because this kernel lacks what an option needs: `map-audit` exits 2
/// (like a usage error), since the same command works on another kernel.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotOnThisKernel(pub String);

/// Whether the kernel keeps soft-dirty bits (CONFIG_MEM_SOFT_DIRTY), which
/// `--rearm-interval` clears: such a kernel marks new mappings `sd` in smaps' VmFlags
/// (every process has some: its stack, its heap). One read of /proc/self/smaps.
pub fn has_soft_dirty() -> bool {
    std::fs::read_to_string("/proc/self/smaps").is_ok_and(|smaps| smaps_has_soft_dirty(&smaps))
}

fn smaps_has_soft_dirty(smaps: &str) -> bool {
    smaps
        .lines()
        .filter_map(|l| l.strip_prefix("VmFlags:"))
        .any(|flags| flags.split_whitespace().any(|f| f == "sd"))
}

/// `--rearm-interval` on a kernel without soft-dirty bits: refused before loading.
pub fn require_soft_dirty() -> Result<()> {
    if has_soft_dirty() {
        return Ok(());
    }
    Err(NotOnThisKernel(format!(
        "--rearm-interval needs soft-dirty bits, which this kernel ({}) was built without (CONFIG_MEM_SOFT_DIRTY); run without it, or on a kernel that has them (Debian's, Ubuntu's and Fedora's x86-64 kernels do)",
        kernel_release()
    ))
    .into())
}

/// The checks that stop a run before anything is loaded, each with what to do; else
/// the object this kernel runs.
pub fn require_run_prerequisites() -> Result<ProgramObject> {
    let (privileged, btf) = (has_bpf_privileges(), has_btf());
    // The feature probes load programs: without privileges they only fail.
    let object = if privileged && btf {
        feature_probes::choose(&kernel_release(), &feature_probes::probe())
    } else {
        Ok(ProgramObject::Linux5_17)
    };
    check_prerequisites(privileged, btf, object)
}

/// The first of: no privileges, no BTF, the features' refusal.
fn check_prerequisites(
    privileged: bool,
    btf: bool,
    object: Result<ProgramObject, String>,
) -> Result<ProgramObject> {
    if !privileged {
        bail!("map-audit needs root or the CAP_BPF and CAP_PERFMON capabilities; run it with sudo");
    }
    if !btf {
        bail!(NO_BTF);
    }
    object.map_err(|sentence| anyhow!(sentence))
}

const NO_BTF: &str = "this kernel has no BTF (/sys/kernel/btf/vmlinux is missing); map-audit needs a kernel built with CONFIG_DEBUG_INFO_BTF=y";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_is_one_sentence_in_order() {
        let sentence = |privileged, btf, missing: Option<&str>| {
            let object = missing.map_or(Ok(ProgramObject::Linux5_10), |m| Err(m.to_string()));
            check_prerequisites(privileged, btf, object)
                .err()
                .map(|err| err.to_string())
        };
        let features = Some(
            "this kernel (5.4.0) lacks ring buffer maps (Linux 5.8), which map-audit's programs use, so it cannot run here",
        );
        assert!(
            sentence(false, false, features)
                .unwrap()
                .contains("run it with sudo")
        );
        assert_eq!(sentence(true, false, features).unwrap(), NO_BTF);
        assert_eq!(sentence(true, true, features).as_deref(), features);
        assert_eq!(sentence(true, true, None), None);
    }

    #[test]
    fn soft_dirty_is_read_from_vm_flags() {
        let with = "7f00-7f01 rw-p 0 00:00 0\nVmFlags: rd wr mr mw me ac sd \n";
        let without = "7f00-7f01 rw-p 0 00:00 0\nVmFlags: rd wr mr mw me ac \nsd: 1\n";
        assert!(smaps_has_soft_dirty(with));
        assert!(!smaps_has_soft_dirty(without));
    }
}
