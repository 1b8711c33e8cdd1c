//! The Go toolchains Go mode's tests build their workloads with, from Debian's
//! packages only: golang-1.19-go (bookworm, installed with apt), and 1.24 (trixie;
//! Swiss-table maps), 1.25 (trixie-backports), 1.26 and 1.27 (forky; `textStart` 0 in
//! the function table), each downloaded with apt-get from a private source list of its
//! suite and unpacked under target/toolchains: their `go` is static and runs here, and
//! nothing of those suites is installed system-wide.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result};

use crate::{run, toolchain::apt_install, workspace_root};

pub const GO_1_19: &str = "/usr/lib/go-1.19/bin/go";
/// (release, the Debian suite that has it) for the unpacked toolchains.
const DEBIAN_GO: [(&str, &str); 4] = [
    ("1.24", "trixie"),
    ("1.25", "trixie-backports"),
    ("1.26", "forky"),
    ("1.27", "forky"),
];

/// Where an unpacked Go release lives (the tests look here too).
pub fn unpacked_go(release: &str) -> PathBuf {
    workspace_root().join(format!(
        "target/toolchains/go-{release}/usr/lib/go-{release}/bin/go"
    ))
}

/// Installs what is missing.
pub fn ensure() -> Result<()> {
    if !Path::new(GO_1_19).exists() {
        apt_install("Go 1.19 (Go mode's test workloads)", &["golang-1.19-go"])?;
    }
    for (release, suite) in DEBIAN_GO {
        if !unpacked_go(release).exists() {
            unpack_debian_go(release, suite)?;
        }
    }
    Ok(())
}

fn unpack_debian_go(release: &str, suite: &str) -> Result<()> {
    let base = workspace_root().join("target/toolchains");
    let apt = base.join(format!("{suite}-apt"));
    let debs = base.join(format!("go-{release}-debs"));
    let root = base.join(format!("go-{release}"));
    for dir in [apt.join("lists/partial"), debs.clone()] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let sources = apt.join(format!("{suite}.list"));
    std::fs::write(
        &sources,
        format!(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian {suite} main\n"
        ),
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
        "xtask: downloading Go {release} from Debian {suite} into {}",
        base.display()
    );
    run(&mut apt_get(&["update", "-q"], &apt))?;
    let packages = [
        format!("golang-{release}-go"),
        format!("golang-{release}-src"),
    ];
    run(apt_get(&["download", "-q"], &debs).args(&packages))?;
    for entry in std::fs::read_dir(&debs)? {
        let deb = entry?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
        }
    }
    anyhow::ensure!(
        unpacked_go(release).exists(),
        "the {suite} packages did not contain {}",
        unpacked_go(release).display()
    );
    Ok(())
}
