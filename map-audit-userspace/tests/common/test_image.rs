//! The container image of the container tests, built once per test binary from a
//! local rootfs (no registry is reachable here) and imported into podman:
//! `/workload` (the static C workload) and `/workload-stripped` (its debug file kept
//! outside, for debuginfod).

use std::{
    path::PathBuf,
    process::{Command, Output},
    sync::OnceLock,
};

pub fn tmp() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
}

/// podman with this machine's settings: a containers.conf without default ulimits
/// (above what the sandbox allows).
pub fn podman(args: &[&str]) -> Output {
    let conf = tmp().join("containers.conf");
    if !conf.exists() {
        std::fs::write(&conf, "[containers]\ndefault_ulimits = []\n").unwrap();
    }
    let out = Command::new("podman")
        .env("CONTAINERS_CONF", &conf)
        .args(args)
        .output()
        .expect("podman runs (`cargo xtask test` installs podman and runc)");
    assert!(
        out.status.success(),
        "podman {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The image, imported once per test binary: `/workload` built static.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let rootfs = tmp().join(format!("podman-rootfs-{}", std::process::id()));
        std::fs::create_dir_all(&rootfs).unwrap();
        let built = super::c_workload(
            "MAP_AUDIT_TEST_STATIC_WORKLOAD",
            "workload.c",
            "workload-static",
            &["-O2", "-static"],
        );
        std::fs::copy(&built, rootfs.join("workload")).unwrap();
        // A stripped build (its debug file kept outside the image, for debuginfod).
        let split_dir = rootfs.with_extension("split");
        std::fs::create_dir_all(&split_dir).unwrap();
        let split = super::split::split(&built_with_debug(), &split_dir, false);
        std::fs::copy(&split.program, rootfs.join("workload-stripped")).unwrap();
        let tar = rootfs.with_extension("tar");
        let status = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .unwrap();
        assert!(status.success());
        // One tag: a later run replaces the image instead of adding one.
        let name = "localhost/map-audit-test:latest".to_string();
        podman(&["import", tar.to_str().unwrap(), &name]);
        name
    })
}

/// The static workload with DWARF (`-g`), to be split.
pub fn built_with_debug() -> PathBuf {
    super::c_workload(
        "MAP_AUDIT_TEST_STATIC_DEBUG_WORKLOAD",
        "workload.c",
        "workload-static-g",
        &["-O2", "-g", "-static", "-Wl,--build-id"],
    )
}

/// The stripped program's debug file and build id (after `image()`).
pub fn stripped_debug_file() -> (PathBuf, String) {
    let rootfs = tmp().join(format!("podman-rootfs-{}", std::process::id()));
    let debug = rootfs.with_extension("split").join("workload.debug");
    let id = super::split::build_id_of(rootfs.join("workload-stripped").to_str().unwrap());
    (debug, id)
}
