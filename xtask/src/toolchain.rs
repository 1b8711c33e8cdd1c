//! The eBPF toolchain from Debian's packages and crates.io only: Debian's rustc/cargo
//! (built on LLVM 22, with a prebuilt `core` for bpfel-unknown-none) and bpf-linker
//! built against the same LLVM. Installs what is missing when it can, and otherwise
//! prints the exact commands.

use std::{path::PathBuf, process::Command};

use anyhow::{Result, bail};

use crate::{run, workspace_root};

pub const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
pub const DEBIAN_CARGO: &str = "/usr/bin/cargo";
/// Debian's clippy for that rustc (`rust-web-clippy`); it finds `clippy-driver` beside it.
pub const DEBIAN_CARGO_CLIPPY: &str = "/usr/bin/cargo-clippy";
const BPF_CORE_DIR: &str = "/usr/lib/rustlib/bpfel-unknown-none/lib";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const APT_PACKAGES: [&str; 4] = [
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Where the project installs its own bpf-linker.
fn local_tools() -> PathBuf {
    workspace_root().join(".tools")
}

/// Makes sure Debian's BPF-capable rustc and bpf-linker are present; returns the
/// bpf-linker path.
pub fn ensure() -> Result<PathBuf> {
    if !debian_toolchain_present() {
        install_apt_packages()?;
    }
    if !std::path::Path::new("/usr/bin/protoc").exists() {
        apt_install(
            "protoc (containerd's client crate builds its API's protocol files with it)",
            &["protobuf-compiler"],
        )?;
    }
    if let Some(linker) = find_bpf_linker() {
        return Ok(linker);
    }
    install_bpf_linker()?;
    find_bpf_linker().ok_or_else(|| {
        anyhow::anyhow!(
            "bpf-linker was installed but cannot be found in {}",
            local_tools().display()
        )
    })
}

fn debian_toolchain_present() -> bool {
    std::path::Path::new(DEBIAN_RUSTC).exists()
        && std::path::Path::new(DEBIAN_CARGO).exists()
        && std::fs::read_dir(BPF_CORE_DIR).is_ok_and(|mut d| {
            d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
        })
        && std::path::Path::new(LLVM_PREFIX).join("lib").exists()
}

fn install_apt_packages() -> Result<()> {
    apt_install("Debian's BPF toolchain", &APT_PACKAGES)
}

/// Installs Debian `packages` (what they are for: `what`) as root, or says how to.
pub fn apt_install(what: &str, packages: &[&str]) -> Result<()> {
    let can_apt = crate::nix_is_root() && std::path::Path::new("/usr/bin/apt-get").exists();
    if !can_apt {
        bail!(
            "{what} is missing; install it as root with:\n  apt-get update && apt-get install -y {}",
            packages.join(" ")
        );
    }
    eprintln!("xtask: installing {} with apt-get", packages.join(" "));
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn find_bpf_linker() -> Option<PathBuf> {
    let mut candidates = vec![local_tools().join("bin/bpf-linker")];
    if let Some(home) = std::env::var_os("CARGO_HOME")
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo").into()))
    {
        candidates.push(PathBuf::from(home).join("bin/bpf-linker"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join("bpf-linker")));
    }
    candidates.into_iter().find(|p| p.is_file())
}

fn install_bpf_linker() -> Result<()> {
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 into {} (about a minute)",
        local_tools().display()
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--no-default-features",
            "--features",
            "llvm-22",
            "--version",
            BPF_LINKER_VERSION,
            "--root",
        ])
        .arg(local_tools())
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .status()?;
    if !status.success() {
        bail!(
            "building bpf-linker failed; run:\n  LLVM_PREFIX={LLVM_PREFIX} cargo install bpf-linker --locked --version {BPF_LINKER_VERSION} --no-default-features --features llvm-22 --root {}",
            local_tools().display()
        );
    }
    Ok(())
}
