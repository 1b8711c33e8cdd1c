//! Embeds the eBPF objects built by `cargo xtask build-ebpf`: the one for 5.17+ and the
//! one for older kernels.
use std::{env, path::PathBuf};

fn main() {
    for (var, dir) in [
        ("MAP_AUDIT_EBPF_OBJECT", "ebpf"),
        ("MAP_AUDIT_EBPF_OBJECT_5_10", "ebpf-5.10"),
    ] {
        let object = env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap())
                .join("../target")
                .join(dir)
                .join("bpfel-unknown-none/release/map-audit")
        });
        println!("cargo:rerun-if-env-changed={var}");
        println!("cargo:rerun-if-changed={}", object.display());
        if !object.exists() {
            panic!(
                "the eBPF object {} is missing: run `cargo xtask build-ebpf` first \
                 (or set {var} to a built object)",
                object.display()
            );
        }
        println!("cargo:rustc-env={var}={}", object.display());
    }
}
