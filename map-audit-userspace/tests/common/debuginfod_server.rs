//! Debian's debuginfod as a test server.

use std::{
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Debian's debuginfod serving the files of `dir`, on a free port; killed on drop.
pub struct DebuginfodServer {
    pub child: Child,
    pub url: String,
}

impl DebuginfodServer {
    /// Started and answering for `build_id`.
    pub fn serving(dir: &Path, build_id: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("debuginfod")
            .args(["-F", dir.to_str().unwrap(), "-p", &port.to_string(), "-d"])
            .arg(dir.join("index.sqlite"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("debuginfod runs (.ci/run installs the debuginfod package)");
        let server = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        // It answers once its scan of `dir` has indexed the file.
        let asked = format!("{}/buildid/{build_id}/debuginfo", server.url);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !reqwest::blocking::get(&asked).is_ok_and(|r| r.status().is_success()) {
            assert!(Instant::now() < deadline, "debuginfod never served {asked}");
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DebuginfodServer {
    fn drop(&mut self) {
        self.stop();
    }
}
