//! Names for frames of stripped binaries from separate debug files, found the way gdb
//! and perf find them: `.gnu_debuglink` next to the binary, and the build id under
//! `/usr/lib/debug/.build-id/`. Without one, a frame says why it has no name and where
//! it is in its file; with `libc6-dbg` installed, libc's static functions are named.
//! (debuginfod servers: `tests/debuginfod.rs`.)

mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use common::{
    run_agent,
    split::{SplitProgram, build_id_of, split_program},
};
use serde_json::Value;

/// The program's own frames of its first write into its anonymous region.
fn program_frames(program: &Path) -> Vec<Value> {
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        program.to_str().unwrap(),
        "anon",
        "2",
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    let fault = run
        .of_kind("write_fault")
        .into_iter()
        .find(|e| e["stack"][0]["module"] == program.to_str().unwrap())
        .unwrap_or_else(|| panic!("no write by the program itself"))
        .clone();
    fault["stack"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["module"] == program.to_str().unwrap())
        .cloned()
        .collect()
}

fn symbols(frames: &[Value]) -> Vec<&str> {
    frames
        .iter()
        .map(|f| f["symbol"].as_str().unwrap_or("?"))
        .collect()
}

#[test]
fn a_debuglink_next_to_the_binary_names_its_frames() {
    let dir = tempfile::tempdir().unwrap();
    let program = split_program(dir.path(), true).program;
    let frames = program_frames(&program);
    assert_eq!(symbols(&frames)[..3], ["write_pages", "anon", "main"]);
    assert!(
        frames[0]["line"].as_u64().is_some(),
        "lines too: {frames:?}"
    );
}

#[test]
fn a_debug_file_under_usr_lib_debug_build_id_names_its_frames() {
    let dir = tempfile::tempdir().unwrap();
    let SplitProgram {
        program, build_id, ..
    } = split_program(dir.path(), true);
    let target = Path::new("/usr/lib/debug/.build-id")
        .join(&build_id[..2])
        .join(format!("{}.debug", &build_id[2..]));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::rename(dir.path().join("workload.debug"), &target).unwrap();
    struct Remove(PathBuf);
    impl Drop for Remove {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let _remove = Remove(target);
    let frames = program_frames(&program);
    assert_eq!(symbols(&frames)[..3], ["write_pages", "anon", "main"]);
}

#[test]
fn without_a_debug_file_frames_say_why_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let program = split_program(dir.path(), true).program;
    std::fs::remove_file(dir.path().join("workload.debug")).unwrap();
    let frames = program_frames(&program);
    let size = std::fs::metadata(&program).unwrap().len();
    let unnamed: Vec<&Value> = frames.iter().filter(|f| f["symbol"].is_null()).collect();
    assert!(unnamed.len() >= 3, "{frames:?}");
    for frame in unnamed {
        assert_eq!(frame["symbol_missing"], "no_symbols", "{frame}");
        let offset = frame["module_offset"].as_str().unwrap();
        assert!(
            u64::from_str_radix(&offset[2..], 16).unwrap() < size,
            "{frame}"
        );
    }
}

#[test]
fn libc6_dbg_names_libcs_static_functions() {
    let libc = "/usr/lib/x86_64-linux-gnu/libc.so.6";
    let id = build_id_of(libc);
    let debug_file = format!("/usr/lib/debug/.build-id/{}/{}.debug", &id[..2], &id[2..]);
    assert!(
        Path::new(&debug_file).exists(),
        "{debug_file} is missing: install libc6-dbg (.ci/run does)"
    );
    // Debian's libc is stripped: its static functions are in no table of its own.
    let own = Command::new("readelf")
        .args(["-sW", libc])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&own.stdout).contains("__libc_start_call_main"));
    let run = run_agent(&[
        "run",
        "--every-event",
        "--",
        common::workload().to_str().unwrap(),
        "anon",
        "2",
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    // Every stack of the program's own code starts at libc's __libc_start_call_main.
    let frames: Vec<Value> = run
        .of_kind("write_fault")
        .iter()
        .flat_map(|f| f["stack"].as_array().unwrap().clone())
        .filter(|f| f["module"] == libc && f["symbol"] == "__libc_start_call_main")
        .collect();
    assert!(
        !frames.is_empty(),
        "no frame names it: {:#?}",
        run.of_kind("write_fault")
    );
    for frame in frames {
        assert!(frame["line"].as_u64().is_some(), "lines too: {frame}");
    }
}
