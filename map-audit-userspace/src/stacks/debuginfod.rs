//! Debug files from debuginfod servers, for modules with none on this host.
//!
//! Fetches run on their own thread, one at a time, so a slow server never holds the
//! pipeline: it asks with `request` and collects answers with `poll`. Files are kept in
//! a bounded cache directory in the layout of elfutils' client (`BUILD_ID/debuginfo`,
//! so `DEBUGINFOD_CACHE_PATH` can be shared with gdb and perf); past the bound the least
//! recently used files are removed. A server that fails (no answer within the timeout,
//! an HTTP error other than 404) is not asked again for a back-off time, 5 s doubling
//! up to 5 min: requests meanwhile are answered as misses at once.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::mpsc::{Receiver, Sender, channel},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context, Result};
use debuginfod::{BuildId, CachingClient, Client};

/// Where fetched files go, and how the servers are asked.
#[derive(Clone, Debug)]
pub struct DebuginfodConfig {
    /// Server URLs, in the order they are asked.
    pub urls: Vec<String>,
    pub cache_dir: PathBuf,
    /// The cache's bound, in bytes.
    pub cache_max_bytes: u64,
    /// Per request: connecting and reading the whole file.
    pub timeout: Duration,
}

/// The default cache: `DEBUGINFOD_CACHE_PATH`, else under /var/cache for root (the
/// agent), else elfutils' own per-user cache (`report` run by a user).
pub fn default_cache_dir() -> PathBuf {
    let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    if let Some(dir) = env("DEBUGINFOD_CACHE_PATH") {
        return dir;
    }
    if !nix::unistd::geteuid().is_root()
        && let Some(cache) = env("XDG_CACHE_HOME").or_else(|| env("HOME").map(|h| h.join(".cache")))
    {
        return cache.join("debuginfod_client");
    }
    PathBuf::from("/var/cache/map-audit/debuginfod")
}

/// The servers of `DEBUGINFOD_URLS` (space-separated, as elfutils reads it).
pub fn urls_from_env() -> Vec<String> {
    std::env::var("DEBUGINFOD_URLS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// Whether a server answers (any HTTP status to a request for a build id nobody has):
/// what it said and how long it took, or why it did not.
pub fn probe(url: &str, timeout: Duration) -> Result<String, String> {
    let client = reqwest::blocking::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|err| err.to_string())?;
    let asked = format!(
        "{}/buildid/{}/debuginfo",
        url.trim_end_matches('/'),
        "0".repeat(40)
    );
    let started = Instant::now();
    match client.get(&asked).send() {
        Ok(response) => Ok(format!(
            "answers (HTTP {} in {} ms)",
            response.status().as_u16(),
            started.elapsed().as_millis()
        )),
        Err(err) => {
            // reqwest's own text leaves out the cause (refused, timed out, no route).
            let mut why = format!("does not answer: {err}");
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                why += &format!(": {cause}");
                source = cause.source();
            }
            Err(why)
        }
    }
}

/// How one request ended.
#[derive(Debug)]
pub enum Answer {
    /// The debug file, from the cache or a server.
    Found { path: PathBuf, fetched_bytes: u64 },
    /// No server has it (404 from every one).
    NotFound,
    /// A server failed, or the servers are backing off after a failure.
    Failed(String),
}

/// An answer, with the build id asked for and the time it took.
#[derive(Debug)]
pub struct Fetched {
    pub build_id: String,
    pub answer: Answer,
    pub seconds: f64,
    pub source: AnswerSource,
}

/// Who answered a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerSource {
    Cache,
    Server,
    /// Nobody: the servers were backing off after a failure.
    BackingOff,
}

/// Counts of the requests' outcomes (in `agent_stats`).
#[derive(Clone, Copy, Debug, Default)]
pub struct DebuginfodCounts {
    pub fetches: u64,
    pub cache_hits: u64,
    pub not_found: u64,
    pub misses: u64,
    pub bytes: u64,
}

/// The pipeline's handle on the fetch thread.
pub struct Debuginfod {
    requests: Sender<String>,
    answers: Receiver<Fetched>,
    pub counts: DebuginfodCounts,
}

impl Debuginfod {
    /// Starts the fetch thread; `None` without servers.
    pub fn start(config: DebuginfodConfig) -> Result<Option<Self>> {
        if config.urls.is_empty() {
            return Ok(None);
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .context("building the debuginfod HTTP client failed")?;
        let client = Client::builder()
            .http_client(http)
            .build(config.urls.iter().map(String::as_str))
            .context("a --debuginfod URL (or DEBUGINFOD_URLS) is not a URL")?
            .context("no debuginfod URL")?;
        let caching = CachingClient::new(client, &config.cache_dir).with_context(|| {
            format!(
                "the debuginfod cache {} cannot be made; choose another with DEBUGINFOD_CACHE_PATH",
                config.cache_dir.display()
            )
        })?;
        let (requests, asked) = channel::<String>();
        let (answer, answers) = channel();
        std::thread::Builder::new()
            .name("debuginfod".into())
            .spawn(move || {
                let mut fetcher = Fetcher {
                    client: caching,
                    cache_dir: config.cache_dir,
                    cache_max_bytes: config.cache_max_bytes,
                    backoff: None,
                };
                for build_id in asked {
                    if answer.send(fetcher.fetch(build_id)).is_err() {
                        return;
                    }
                }
            })
            .context("starting the debuginfod thread failed")?;
        Ok(Some(Self {
            requests,
            answers,
            counts: DebuginfodCounts::default(),
        }))
    }

    /// Asks for the debug file of `build_id` (hex).
    pub fn request(&self, build_id: &str) {
        // The thread ends only with this handle: a send cannot fail before.
        let _ = self.requests.send(build_id.to_string());
    }

    /// The answers that arrived, waiting up to `wait` for the first one.
    pub fn poll(&mut self, wait: Duration) -> Vec<Fetched> {
        let mut fetched = Vec::new();
        if !wait.is_zero()
            && let Ok(first) = self.answers.recv_timeout(wait)
        {
            fetched.push(first);
        }
        fetched.extend(self.answers.try_iter());
        for f in &fetched {
            self.count(f);
        }
        fetched
    }

    fn count(&mut self, fetched: &Fetched) {
        match fetched.source {
            AnswerSource::Cache => self.counts.cache_hits += 1,
            AnswerSource::Server => self.counts.fetches += 1,
            AnswerSource::BackingOff => {}
        }
        match &fetched.answer {
            Answer::Found { fetched_bytes, .. } => self.counts.bytes += fetched_bytes,
            Answer::NotFound => self.counts.not_found += 1,
            Answer::Failed(_) => self.counts.misses += 1,
        }
        if let Some(metrics) = crate::output::metrics::get() {
            metrics.debuginfod_answered(fetched.seconds, fetched.source);
        }
    }
}

struct Fetcher {
    client: CachingClient,
    cache_dir: PathBuf,
    cache_max_bytes: u64,
    /// After a failure: no server is asked before this time; the current back-off.
    backoff: Option<(Instant, Duration)>,
}

const FIRST_BACKOFF: Duration = Duration::from_secs(5);
const LONGEST_BACKOFF: Duration = Duration::from_secs(300);

impl Fetcher {
    fn fetch(&mut self, build_id: String) -> Fetched {
        let started = Instant::now();
        let cached = self.cache_dir.join(&build_id).join("debuginfo");
        let mut source = AnswerSource::Server;
        let answer = if cached.exists() {
            source = AnswerSource::Cache;
            // Recently used: the bound removes it last.
            let _ = std::fs::File::options()
                .append(true)
                .open(&cached)
                .and_then(|f| f.set_modified(SystemTime::now()));
            Answer::Found {
                path: cached,
                fetched_bytes: 0,
            }
        } else if let Some((until, _)) = self.backoff.filter(|(until, _)| Instant::now() < *until) {
            source = AnswerSource::BackingOff;
            Answer::Failed(format!(
                "servers backing off for {:.0} s after a failure",
                (until - Instant::now()).as_secs_f64()
            ))
        } else {
            self.ask_servers(&build_id)
        };
        Fetched {
            build_id,
            answer,
            seconds: started.elapsed().as_secs_f64(),
            source,
        }
    }

    fn ask_servers(&mut self, build_id: &str) -> Answer {
        match self.client.fetch_debug_info(&BuildId::formatted(build_id)) {
            Ok(Some(path)) => {
                self.backoff = None;
                let fetched_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
                bound_cache(&self.cache_dir, self.cache_max_bytes, &path);
                Answer::Found {
                    path,
                    fetched_bytes,
                }
            }
            Ok(None) => {
                self.backoff = None;
                Answer::NotFound
            }
            Err(err) => {
                let next = self
                    .backoff
                    .map_or(FIRST_BACKOFF, |(_, b)| (b * 2).min(LONGEST_BACKOFF));
                self.backoff = Some((Instant::now() + next, next));
                log::warn!(
                    "debuginfod: {err:#}; no server is asked for {} s",
                    next.as_secs()
                );
                Answer::Failed(format!("{err:#}"))
            }
        }
    }
}

/// Removes the least recently used debug files until the cache holds at most
/// `max_bytes`, never `keep` (the file just fetched).
fn bound_cache(dir: &Path, max_bytes: u64, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
        .flatten()
        .map(|e| e.path().join("debuginfo"))
        .filter_map(|path| {
            let meta = std::fs::metadata(&path).ok()?;
            Some((meta.modified().ok()?, meta.len(), path))
        })
        .collect();
    let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
    files.sort();
    let sizes: HashMap<PathBuf, u64> = files.iter().map(|(_, l, p)| (p.clone(), *l)).collect();
    for (_, _, path) in files {
        if total <= max_bytes {
            break;
        }
        if path == keep {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= sizes[&path];
            if let Some(parent) = path.parent() {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, id: &str, len: usize, age_s: u64) -> PathBuf {
        let path = dir.join(id).join("debuginfo");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, vec![0u8; len]).unwrap();
        let file = std::fs::File::options().append(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(age_s))
            .unwrap();
        path
    }

    #[test]
    fn the_cache_bound_removes_the_least_recently_used_files_first() {
        let dir = tempfile::tempdir().unwrap();
        let oldest = put(dir.path(), "aa", 400, 300);
        let older = put(dir.path(), "bb", 400, 200);
        let newest = put(dir.path(), "cc", 400, 100);
        let just_fetched = put(dir.path(), "dd", 400, 1000);
        bound_cache(dir.path(), 900, &just_fetched);
        assert!(!oldest.exists() && !older.exists());
        assert!(!dir.path().join("aa").exists(), "its folder goes too");
        assert!(newest.exists() && just_fetched.exists());
    }

    #[test]
    fn a_cache_under_its_bound_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let a = put(dir.path(), "aa", 100, 10);
        let b = put(dir.path(), "bb", 100, 5);
        bound_cache(dir.path(), 1000, &b);
        assert!(a.exists() && b.exists());
    }
}
