//! Embeds the eBPF object built by `cargo xtask build-ebpf`.
use std::{env, path::PathBuf};

fn main() {
    let object = env::var_os("MAP_AUDIT_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap())
                .join("../target/ebpf/bpfel-unknown-none/release/map-audit")
        });
    println!("cargo:rerun-if-env-changed=MAP_AUDIT_EBPF_OBJECT");
    println!("cargo:rerun-if-changed={}", object.display());
    if !object.exists() {
        panic!(
            "the eBPF object {} is missing: run `cargo xtask build-ebpf` first \
             (or set MAP_AUDIT_EBPF_OBJECT to a built object)",
            object.display()
        );
    }
    println!("cargo:rustc-env=MAP_AUDIT_EBPF_OBJECT={}", object.display());
}
