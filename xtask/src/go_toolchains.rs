//! The Go toolchains Go mode's tests build their workloads with, from Debian's
//! packages only: golang-1.19-go (bookworm, installed with apt) and golang-1.24-go
//! 1.24.4 (trixie; Swiss-table maps), which is downloaded with apt-get from a private
//! trixie source list and unpacked under target/toolchains: its `go` is static and
//! runs here, and nothing of trixie is installed system-wide.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::{run, toolchain::apt_install, workspace_root};

pub const GO_1_19: &str = "/usr/lib/go-1.19/bin/go";
const TRIXIE_PACKAGES: [&str; 2] = ["golang-1.24-go", "golang-1.24-src"];

/// Where the unpacked Go 1.24 lives (the tests look here too).
pub fn go_1_24() -> PathBuf {
    workspace_root().join("target/toolchains/go-1.24/usr/lib/go-1.24/bin/go")
}

/// Installs what is missing.
pub fn ensure() -> Result<()> {
    if !Path::new(GO_1_19).exists() {
        apt_install("Go 1.19 (Go mode's test workloads)", &["golang-1.19-go"])?;
    }
    if !go_1_24().exists() {
        unpack_trixie_go()?;
    }
    Ok(())
}

fn unpack_trixie_go() -> Result<()> {
    let base = workspace_root().join("target/toolchains");
    let apt = base.join("trixie-apt");
    let debs = base.join("trixie-debs");
    let root = base.join("go-1.24");
    for dir in [apt.join("lists/partial"), debs.clone()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let sources = apt.join("trixie.list");
    std::fs::write(
        &sources,
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main\n",
    )?;
    let apt_get = |args: &[&str], dir: &Path| {
        let mut command = Command::new("apt-get");
        command
            .current_dir(dir)
            .arg(format!("-oDir::Etc::SourceList={}", sources.display()))
            .arg("-oDir::Etc::SourceParts=/dev/null")
            .arg(format!(
                "-oDir::State::Lists={}",
                apt.join("lists").display()
            ))
            .arg("-oAPT::Sandbox::User=root")
            .args(args);
        command
    };
    eprintln!(
        "xtask: downloading Go 1.24 from Debian trixie into {}",
        base.display()
    );
    run(&mut apt_get(&["update", "-q"], &apt))?;
    run(apt_get(&["download", "-q"], &debs).args(TRIXIE_PACKAGES))?;
    for entry in std::fs::read_dir(&debs)? {
        let deb = entry?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
        }
    }
    anyhow::ensure!(
        go_1_24().exists(),
        "the trixie packages did not contain {}",
        go_1_24().display()
    );
    Ok(())
}
