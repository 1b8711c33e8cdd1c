//! Builds `map-audit-ebpf` for bpfel-unknown-none with Debian's rustc and bpf-linker.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;

use crate::{
    run,
    toolchain::{self, DEBIAN_CARGO, DEBIAN_CARGO_CLIPPY},
    workspace_root,
};

/// Builds the two objects the agent's build.rs embeds, for 5.17+ (`target/ebpf`) and
/// for older kernels (`target/ebpf-5.10`, feature `kernel-5-10`), and returns the
/// first's path.
pub fn build() -> Result<PathBuf> {
    let linker = toolchain::ensure()?;
    let mut first = None;
    for (dir, features) in [
        ("target/ebpf", None),
        ("target/ebpf-5.10", Some("kernel-5-10")),
    ] {
        let target_dir = workspace_root().join(dir);
        let mut cargo = debian_cargo(DEBIAN_CARGO, "build", &target_dir);
        cargo.env("CARGO_TARGET_BPFEL_UNKNOWN_NONE_LINKER", &linker);
        if let Some(features) = features {
            cargo.args(["--features", features]);
        }
        run(&mut cargo)?;
        first.get_or_insert(target_dir.join("bpfel-unknown-none/release/map-audit"));
    }
    Ok(first.expect("two builds ran"))
}

/// Lints the eBPF crate with Debian's clippy (the toolchain that builds it), warnings
/// as errors. `cargo clippy --workspace` does not reach it: it is outside the workspace.
pub fn clippy() -> Result<()> {
    toolchain::ensure()?;
    if !Path::new(DEBIAN_CARGO_CLIPPY).exists() {
        toolchain::apt_install("clippy for Debian's rustc", &["rust-web-clippy"])?;
    }
    let target_dir = workspace_root().join("target/ebpf-clippy");
    for features in ["", "kernel-5-10"] {
        let mut cargo = debian_cargo(DEBIAN_CARGO_CLIPPY, "clippy", &target_dir);
        cargo.args(["--features", features, "--", "-D", "warnings"]);
        run(&mut cargo)?;
    }
    Ok(())
}

/// Debian's `cargo`, set up for the eBPF crate: `subcommand --release --target
/// bpfel-unknown-none`, with Debian's rustc and none of the outer cargo's settings.
fn debian_cargo(program: &str, subcommand: &str, target_dir: &Path) -> Command {
    let mut cargo = Command::new(program);
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
        .current_dir(workspace_root().join("map-audit-ebpf"))
        .env("RUSTC", toolchain::DEBIAN_RUSTC)
        // aya-ebpf uses an unstable feature; Debian's stable rustc allows it with this.
        .env("RUSTC_BOOTSTRAP", "1")
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
        .args([subcommand, "--release", "--target", "bpfel-unknown-none"])
        .arg("--target-dir")
        .arg(target_dir);
    cargo
}
