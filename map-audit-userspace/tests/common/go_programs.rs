//! The Go programs of the Go mode tests (`tests/go/`), built by each Go toolchain of
//! the matrix the way users build them.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
};

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Go {
    V1_19,
    V1_24,
    V1_25,
    V1_26,
    V1_27,
}

impl Go {
    pub fn binary(self) -> PathBuf {
        let unpacked = |release: &str| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
                "../target/toolchains/go-{release}/usr/lib/go-{release}/bin/go"
            ))
        };
        let path = match self {
            Go::V1_19 => PathBuf::from("/usr/lib/go-1.19/bin/go"),
            Go::V1_24 => unpacked("1.24"),
            Go::V1_25 => unpacked("1.25"),
            Go::V1_26 => unpacked("1.26"),
            Go::V1_27 => unpacked("1.27"),
        };
        assert!(
            path.exists(),
            "{} is missing: `cargo xtask test` installs the Go toolchains (golang-1.19-go from apt, 1.24 to 1.27 unpacked from trixie, trixie-backports and forky)",
            path.display()
        );
        path
    }
}

/// How `mapwriters` is built.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Build {
    Plain,
    /// -ldflags=-s -w: no symbol table, no DWARF.
    Stripped,
    /// -buildmode=pie: loaded at a random base.
    Pie,
    /// Not mapwriters but `cgowait.go`, with cgo (C code and libc in the process).
    CgoWait,
}

/// `mapwriters` built by `go`, once per test binary.
pub fn mapwriters(go: Go, how: Build) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<(Go, Build), PathBuf>>> = OnceLock::new();
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    built
        .entry((go, how))
        .or_insert_with(|| {
            let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
            let out = tmp.join(format!("mapwriters-{go:?}-{how:?}-{}", std::process::id()));
            let toolchain = go.binary();
            let goroot = toolchain.parent().unwrap().parent().unwrap();
            let mut build = Command::new(&toolchain);
            build
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/go"))
                .env("GOROOT", goroot)
                .env("GOTOOLCHAIN", "local")
                .env("GOCACHE", tmp.join("gocache"))
                .env("GOPATH", tmp.join("gopath"))
                .env("HOME", &tmp)
                .args(["build", "-o"])
                .arg(&out);
            match how {
                Build::Plain => {}
                Build::Stripped => {
                    build.arg("-ldflags=-s -w");
                }
                Build::Pie => {
                    build.arg("-buildmode=pie");
                }
                Build::CgoWait => {
                    build.env("CGO_ENABLED", "1");
                }
            }
            let source = match how {
                Build::CgoWait => "cgowait.go",
                _ => "mapwriters.go",
            };
            let status = build.arg(source).status().expect("go runs");
            assert!(status.success(), "building mapwriters with {go:?} failed");
            out
        })
        .clone()
}
