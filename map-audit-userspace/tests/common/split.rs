//! The workload split as distributions ship it: built `-O2 -g`, its DWARF moved to a
//! separate debug file, the program stripped.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// A split program.
pub struct SplitProgram {
    /// The stripped program.
    pub program: PathBuf,
    /// Its debug file (`objcopy --only-keep-debug`).
    pub debug_file: PathBuf,
    /// The build id, hex.
    pub build_id: String,
}

/// The workload split in `dir` (`workload`, `workload.debug`); with `debuglink` the
/// program names its debug file by `.gnu_debuglink`.
pub fn split_program(dir: &Path, debuglink: bool) -> SplitProgram {
    // Built once: the tests run at once and would race on the same output file.
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        super::c_workload(
            "MAP_AUDIT_TEST_SPLIT_WORKLOAD",
            "workload.c",
            "workload-split",
            &["-O2", "-g", "-Wl,--build-id"],
        )
    });
    split(built, dir, debuglink)
}

/// The program `built` split the same way in `dir`.
pub fn split(built: &Path, dir: &Path, debuglink: bool) -> SplitProgram {
    let program = dir.join("workload");
    let debug_file = dir.join("workload.debug");
    std::fs::copy(built, &program).unwrap();
    let tool = |args: &[&str]| {
        let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
        assert!(status.success(), "{args:?}");
    };
    let (p, d) = (program.to_str().unwrap(), debug_file.to_str().unwrap());
    tool(&["objcopy", "--only-keep-debug", p, d]);
    tool(&["strip", "-s", p]);
    if debuglink {
        tool(&["objcopy", &format!("--add-gnu-debuglink={d}"), p]);
    }
    let build_id = build_id_of(p);
    SplitProgram {
        program,
        debug_file,
        build_id,
    }
}

/// A file's GNU build id, from its notes.
pub fn build_id_of(path: &str) -> String {
    let notes = Command::new("readelf").args(["-n", path]).output().unwrap();
    String::from_utf8_lossy(&notes.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix("Build ID: ").map(str::to_string))
        .unwrap_or_else(|| panic!("{path} has no build id"))
}
