//! Builds `map-audit-ebpf` for bpfel-unknown-none with Debian's rustc and bpf-linker.

use std::{path::PathBuf, process::Command};

use anyhow::Result;

use crate::{run, toolchain, workspace_root};

/// Builds the object and returns its path (the one the agent's build.rs embeds).
pub fn build() -> Result<PathBuf> {
    let linker = toolchain::ensure()?;
    let root = workspace_root();
    let target_dir = root.join("target/ebpf");
    let mut cargo = Command::new(toolchain::DEBIAN_CARGO);
    // Variables set by the outer (rustup) cargo would point the inner build at the
    // wrong compiler or flags.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTUP_TOOLCHAIN",
        "CARGO_TARGET_DIR",
    ] {
        cargo.env_remove(var);
    }
    cargo
        .current_dir(root.join("map-audit-ebpf"))
        .env("RUSTC", toolchain::DEBIAN_RUSTC)
        // aya-ebpf uses an unstable feature; Debian's stable rustc allows it with this.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &linker)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            // BPF CPU v3 (kernels 5.12+, below the 5.17 floor) for atomic fetch-and-add;
            // rustc passes it on to bpf-linker.
            [
                "-C",
                "debuginfo=2",
                "-C",
                "target-cpu=v3",
                "-C",
                "link-arg=--btf",
            ]
            .join("\u{1f}"),
        )
        .args([
            "build",
            "--release",
            "--target",
            "bpfel-unknown-none",
            "--target-dir",
        ])
        .arg(&target_dir);
    run(&mut cargo)?;
    Ok(target_dir.join("bpfel-unknown-none/release/map-audit"))
}
