//! Names for frames of a stripped program from a debuginfod server, fetched in the
//! background: Debian's `debuginfod` serving only the program's debug file, the same
//! server stopped (a counted miss, no stall), and a slow server that aggregates wait
//! for up to `--debuginfod-wait`.

mod common;

use std::{
    io::{Read, Write},
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use common::{
    debuginfod_server::DebuginfodServer,
    run_agent,
    split::{SplitProgram, split_program},
};
use serde_json::Value;

/// The program split in `dir`: `bin/workload` stripped, with no debuglink, and its
/// debug file alone in `serve/`.
fn program_and_served_debug_file(dir: &Path) -> (PathBuf, PathBuf, String) {
    let SplitProgram {
        program,
        debug_file,
        build_id,
    } = split_program(dir, false);
    let (bin, serve) = (dir.join("bin"), dir.join("serve"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&serve).unwrap();
    std::fs::rename(&program, bin.join("workload")).unwrap();
    std::fs::rename(&debug_file, serve.join("workload.debug")).unwrap();
    (bin.join("workload"), serve, build_id)
}

/// The agent run on the program (aggregated, the default) with `options`.
fn audited(program: &Path, options: &[&str]) -> common::Run {
    let mut args = vec!["run"];
    args.extend_from_slice(options);
    args.extend_from_slice(&["--", program.to_str().unwrap(), "anon", "2"]);
    let run = run_agent(&args);
    assert!(run.status.success(), "{}", run.stderr);
    run
}

/// The program's own frames of the write of `write_pages` called by `anon` (the
/// frame chain is found by offsets, so it is found also when unnamed).
fn program_frames(run: &common::Run, program: &Path) -> Vec<Value> {
    let module = program.to_str().unwrap();
    let stacks: Vec<Vec<Value>> = run
        .of_kind("write_fault")
        .iter()
        .map(|e| {
            e["stack"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|f| f["module"] == module)
                .cloned()
                .collect()
        })
        .collect();
    let wanted = write_pages_offset(program);
    stacks
        .into_iter()
        .find(|frames: &Vec<Value>| {
            frames.first().is_some_and(|f| {
                let offset = f["module_offset"].as_str().map(common::hex);
                // Named: by name; unnamed: by its offset in the file.
                f["symbol"] == "write_pages" || offset.is_some_and(|o| wanted.contains(&o))
            })
        })
        .unwrap_or_else(|| panic!("no write by write_pages: {:#?}", run.of_kind("write_fault")))
}

/// The file offsets of `write_pages`'s code, from the symbol table of the unstripped
/// build (the debug file keeps it).
fn write_pages_offset(program: &Path) -> std::ops::Range<u64> {
    let debug = program
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("serve/workload.debug");
    let out = Command::new("nm")
        .args(["-S"])
        .arg(&debug)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.ends_with(" write_pages"))
        .map(str::to_string)
        .expect("write_pages in the debug file's symbols");
    let mut parts = line.split_whitespace();
    let start = u64::from_str_radix(parts.next().unwrap(), 16).unwrap();
    let size = u64::from_str_radix(parts.next().unwrap(), 16).unwrap();
    // A PIE's first loadable segment starts at offset 0 and address 0, and its code
    // segment keeps offset == address (what gcc and ld do for these programs).
    start..start + size
}

fn symbols(frames: &[Value]) -> Vec<&str> {
    frames
        .iter()
        .map(|f| f["symbol"].as_str().unwrap_or("?"))
        .collect()
}

fn agent_counter(run: &common::Run, name: &str) -> u64 {
    run.stopped()["counters"]["agent"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no agent counter {name}"))
}

#[test]
fn a_debuginfod_server_names_a_stripped_programs_frames_then_the_cache_does() {
    let dir = tempfile::tempdir().unwrap();
    let (program, serve, build_id) = program_and_served_debug_file(dir.path());
    let debug_size = std::fs::metadata(serve.join("workload.debug"))
        .unwrap()
        .len();
    let server = DebuginfodServer::serving(&serve, &build_id);
    let cache = dir.path().join("cache");
    let options = [
        "--debuginfod",
        &server.url,
        "--debuginfod-cache",
        cache.to_str().unwrap(),
    ];

    let fetched = audited(&program, &options);
    let frames = program_frames(&fetched, &program);
    assert_eq!(symbols(&frames)[..3], ["write_pages", "anon", "main"]);
    assert!(
        frames[..3].iter().all(|f| f["line"].as_u64().is_some()),
        "lines too: {frames:?}"
    );
    assert_eq!(agent_counter(&fetched, "debuginfod_fetches"), 1);
    assert_eq!(agent_counter(&fetched, "debuginfod_misses"), 0);
    assert_eq!(agent_counter(&fetched, "debuginfod_bytes"), debug_size);
    assert!(
        cache.join(&build_id).join("debuginfo").exists(),
        "kept in elfutils' cache layout"
    );

    let cached = audited(&program, &options);
    assert_eq!(
        symbols(&program_frames(&cached, &program))[..3],
        ["write_pages", "anon", "main"]
    );
    assert_eq!(agent_counter(&cached, "debuginfod_cache_hits"), 1);
    assert_eq!(agent_counter(&cached, "debuginfod_fetches"), 0);
}

#[test]
fn a_stopped_server_costs_a_counted_miss_not_a_stall() {
    let dir = tempfile::tempdir().unwrap();
    let (program, serve, build_id) = program_and_served_debug_file(dir.path());
    let mut server = DebuginfodServer::serving(&serve, &build_id);
    server.stop();
    let started = Instant::now();
    let run = audited(
        &program,
        &[
            "--debuginfod",
            &server.url,
            "--debuginfod-cache",
            dir.path().join("cache").to_str().unwrap(),
        ],
    );
    let frames = program_frames(&run, &program);
    assert!(
        frames[..3]
            .iter()
            .all(|f| f["symbol_missing"] == "no_symbols"),
        "{frames:?}"
    );
    assert_eq!(agent_counter(&run, "debuginfod_misses"), 1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a refused connection fails at once"
    );
}

/// The server stops while the agent runs: a program mapped before is named, one
/// mapped after gets a counted miss, and its events still flow.
#[test]
fn a_server_stopped_mid_run_costs_a_miss_and_events_still_flow() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("first")).unwrap();
    let (first, serve, first_id) = program_and_served_debug_file(&dir.path().join("first"));
    // Another build of the workload: another build id, its debug file served too.
    let other = common::c_workload(
        "MAP_AUDIT_TEST_SPLIT_WORKLOAD_O1",
        "workload.c",
        "workload-split-o1",
        &["-O1", "-g", "-Wl,--build-id"],
    );
    let second_dir = dir.path().join("second");
    std::fs::create_dir_all(&second_dir).unwrap();
    let second = common::split::split(&other, &second_dir, false);
    assert_ne!(second.build_id, first_id);
    std::fs::rename(&second.debug_file, serve.join("second.debug")).unwrap();
    let server = DebuginfodServer::serving(&serve, &first_id);
    let script = format!(
        // SIGKILL: on SIGTERM debuginfod finishes its work first, and on a loaded machine
        // it still answered the second program's request.
        "{first} anon 2 && sleep 1 && kill -9 {server} && sleep 0.5 && {second} anon 2",
        first = first.display(),
        server = server.child.id(),
        second = second.program.display(),
    );
    let run = run_agent(&[
        "run",
        "--debuginfod",
        &server.url,
        "--debuginfod-cache",
        dir.path().join("cache").to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    // Programs a shell execs fault before their unwind tables are built (their stacks
    // end `no_unwind_info`): the innermost frame is the one to look at.
    assert_eq!(symbols(&program_frames(&run, &first))[0], "write_pages");
    let unnamed = run
        .of_kind("write_fault")
        .into_iter()
        .flat_map(|e| e["stack"].as_array().unwrap())
        .filter(|f| f["module"] == second.program.to_str().unwrap())
        .collect::<Vec<_>>();
    assert!(
        !unnamed.is_empty(),
        "the second program's writes are reported"
    );
    assert!(
        unnamed.iter().all(|f| f["symbol_missing"] == "no_symbols"),
        "{unnamed:?}"
    );
    // The shell and `sleep` (stripped, no debug file here) are asked for too: 404s.
    assert_eq!(
        agent_counter(&run, "debuginfod_misses"),
        1,
        "the second program"
    );
}

/// A debuginfod server that answers after `delay`: the debug file for its build id,
/// 404 for anything else.
fn slow_server(debug_file: PathBuf, build_id: String, delay: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for mut stream in listener.incoming().map_while(Result::ok) {
            let (file, id) = (debug_file.clone(), build_id.clone());
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                std::thread::sleep(delay);
                let wanted = format!("GET /buildid/{id}/debuginfo ");
                let response = if request.starts_with(wanted.as_bytes()) {
                    let body = std::fs::read(&file).unwrap();
                    let mut r = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    r.extend(body);
                    r
                } else {
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_vec()
                };
                let _ = stream.write_all(&response);
            });
        }
    });
    url
}

#[test]
fn aggregates_wait_for_a_slow_server_up_to_their_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (program, serve, build_id) = program_and_served_debug_file(dir.path());
    let url = slow_server(
        serve.join("workload.debug"),
        build_id,
        Duration::from_secs(3),
    );
    let run_with_wait = |wait: &str, cache: &str| {
        audited(
            &program,
            &[
                "--debuginfod",
                &url,
                "--debuginfod-wait",
                wait,
                "--debuginfod-cache",
                dir.path().join(cache).to_str().unwrap(),
            ],
        )
    };

    let waited = run_with_wait("30", "cache-waited");
    assert_eq!(
        symbols(&program_frames(&waited, &program))[..3],
        ["write_pages", "anon", "main"]
    );
    assert_eq!(
        agent_counter(&waited, "aggregates_sent_before_debug_file"),
        0
    );

    let hurried = run_with_wait("0.5", "cache-hurried");
    let frames = program_frames(&hurried, &program);
    assert!(
        frames[..3]
            .iter()
            .all(|f| f["symbol_missing"] == "debuginfo_pending" && f["module_offset"].is_string()),
        "{frames:?}"
    );
    assert!(agent_counter(&hurried, "aggregates_sent_before_debug_file") >= 1);
}

#[test]
fn check_says_which_debuginfod_servers_answer() {
    let dir = tempfile::tempdir().unwrap();
    let (_, serve, build_id) = program_and_served_debug_file(dir.path());
    let server = DebuginfodServer::serving(&serve, &build_id);
    let mut stopped = DebuginfodServer::serving(&serve, &build_id);
    stopped.stop();
    let out = Command::new(common::AGENT)
        .arg("check")
        .env("DEBUGINFOD_URLS", format!("{} {}", server.url, stopped.url))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |url: &str| {
        text.lines()
            .find(|l| l.contains(&format!("debuginfod {url} ")))
            .unwrap_or_else(|| panic!("no line for {url}: {text}"))
            .to_string()
    };
    assert!(line(&server.url).contains("answers (HTTP 404"), "{text}");
    assert!(line(&stopped.url).contains("does not answer"), "{text}");
    assert!(text.contains("/usr/lib/debug/.build-id/"), "{text}");
}

#[test]
fn report_resymbolize_names_frames_recorded_unnamed() {
    let dir = tempfile::tempdir().unwrap();
    let (program, serve, build_id) = program_and_served_debug_file(dir.path());
    // Recorded with no server: the program's frames are unnamed, with build id and
    // address.
    let recorded = audited(&program, &["--no-debuginfod"]);
    let frames = program_frames(&recorded, &program);
    assert!(
        frames[..3]
            .iter()
            .all(|f| f["module_build_id"] == build_id.as_str() && f["module_address"].is_string()),
        "{frames:?}"
    );
    let stream = dir.path().join("stream.jsonl");
    let lines: Vec<String> = recorded.events.iter().map(Value::to_string).collect();
    std::fs::write(&stream, lines.join("\n") + "\n").unwrap();

    let server = DebuginfodServer::serving(&serve, &build_id);
    let folded = |extra: &[&str]| {
        let out_file = dir.path().join("out.folded");
        let out = Command::new(common::AGENT)
            .arg("report")
            .args(extra)
            .args(["--folded", out_file.to_str().unwrap()])
            .arg(&stream)
            .env_remove("DEBUGINFOD_URLS")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(out_file).unwrap()
    };
    let unnamed = folded(&[]);
    assert!(!unnamed.contains(";anon;write_pages"), "{unnamed}");
    assert!(unnamed.contains("workload+0x"), "{unnamed}");
    let cache = dir.path().join("cache");
    let named = folded(&[
        "--resymbolize",
        "--debuginfod",
        &server.url,
        "--debuginfod-cache",
        cache.to_str().unwrap(),
    ]);
    assert!(named.contains(";main;anon;write_pages "), "{named}");
    assert!(cache.join(&build_id).join("debuginfo").exists());
}
