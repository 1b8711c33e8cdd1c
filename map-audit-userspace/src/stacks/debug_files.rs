//! Which modules' debug information comes from debuginfod, and where it stands. A
//! module is looked at once (`debug_lookup`): with debug information on this host,
//! blazesym finds it itself; without, its build id is asked for (`debuginfod`), and its
//! frames are named from the fetched file once it arrives.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use crate::stacks::{
    debug_lookup::{DEBUG_ROOT, DebugSource, ModuleDebugInfo},
    debuginfod::{Answer, Debuginfod, DebuginfodCounts},
};

/// A build id's request.
enum Remote {
    Pending,
    Found(PathBuf),
    /// No server had it (`retry_at` None), or they failed: asked again after `retry_at`.
    Missing {
        retry_at: Option<Instant>,
    },
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// After a failed request, a module is asked for again no sooner than this.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// The fetched debug file of a module, and how to address it.
pub struct FetchedDebugFile<'a> {
    pub path: &'a Path,
    pub module: &'a ModuleDebugInfo,
}

pub struct DebugFiles {
    debuginfod: Option<Debuginfod>,
    /// Modules looked at, by (device, inode) (a path may be `/proc/self/fd/N`, reused).
    modules: HashMap<(u64, u64), Module>,
    remote: HashMap<String, Remote>,
}

/// What a module says of itself, and whether its debug file is asked for remotely.
struct Module {
    /// `None`: unreadable, or not ELF.
    info: Option<Rc<ModuleDebugInfo>>,
    asks_remote: bool,
}

impl DebugFiles {
    pub fn new(debuginfod: Option<Debuginfod>) -> Self {
        Self {
            debuginfod,
            modules: HashMap::new(),
            remote: HashMap::new(),
        }
    }

    /// The module at `path`, read the first time it is seen (once per file).
    fn module(&mut self, path: &Path) -> Option<&Module> {
        let identity = identity(path)?;
        let fetches = self.debuginfod.is_some();
        Some(self.modules.entry(identity).or_insert_with(|| {
            let info = ModuleDebugInfo::read(path).ok();
            let asks_remote = fetches
                && info.as_ref().is_some_and(|info| {
                    matches!(
                        info.source(path, Path::new(DEBUG_ROOT), Path::exists),
                        DebugSource::Remote(_)
                    )
                });
            Module {
                info: info.map(Rc::new),
                asks_remote,
            }
        }))
    }

    /// The module's build id and segments (for frames left unnamed).
    pub fn describe(&mut self, path: &Path) -> Option<Rc<ModuleDebugInfo>> {
        self.module(path)?.info.clone()
    }

    /// Looks at a module the first time it is seen, and asks for its debug file when
    /// this host has none (or asks again after a failure).
    pub fn module_seen(&mut self, path: &Path) {
        if self.debuginfod.is_none() {
            return;
        }
        let Some(build_id) = self
            .module(path)
            .filter(|m| m.asks_remote)
            .and_then(|m| m.info.as_ref()?.build_id.clone())
        else {
            return;
        };
        let ask = match self.remote.get(&build_id) {
            None => true,
            Some(Remote::Missing { retry_at: Some(at) }) => Instant::now() >= *at,
            Some(_) => false,
        };
        if ask && let Some(debuginfod) = &self.debuginfod {
            debuginfod.request(&build_id);
            self.remote.insert(build_id, Remote::Pending);
        }
    }

    /// The remote state of a module's debug file, and the module.
    fn remote_of(&self, path: &Path) -> Option<(&Remote, &Rc<ModuleDebugInfo>)> {
        let module = self.modules.get(&identity(path)?)?;
        let info = module.info.as_ref().filter(|_| module.asks_remote)?;
        Some((self.remote.get(info.build_id.as_ref()?)?, info))
    }

    /// The module's fetched debug file, once it has arrived.
    pub fn fetched(&self, path: &Path) -> Option<FetchedDebugFile<'_>> {
        match self.remote_of(path)? {
            (Remote::Found(file), module) => Some(FetchedDebugFile { path: file, module }),
            _ => None,
        }
    }

    /// The module's debug file is being fetched.
    pub fn pending(&self, path: &Path) -> bool {
        matches!(self.remote_of(path), Some((Remote::Pending, _)))
    }

    pub fn fetches(&self) -> bool {
        self.debuginfod.is_some()
    }

    pub fn any_pending(&self) -> bool {
        self.remote.values().any(|r| matches!(r, Remote::Pending))
    }

    /// Takes the answers that arrived (waiting up to `wait` for one); true when any
    /// did, so names resolved before must be looked up again.
    pub fn poll(&mut self, wait: Duration) -> bool {
        let Some(debuginfod) = &mut self.debuginfod else {
            return false;
        };
        let answers = debuginfod.poll(wait);
        for fetched in &answers {
            let state = match &fetched.answer {
                Answer::Found { path, .. } => Remote::Found(path.clone()),
                Answer::NotFound => Remote::Missing { retry_at: None },
                Answer::Failed(why) => {
                    log::debug!("no debug file for build id {}: {why}", fetched.build_id);
                    Remote::Missing {
                        retry_at: Some(Instant::now() + RETRY_AFTER),
                    }
                }
            };
            self.remote.insert(fetched.build_id.clone(), state);
        }
        !answers.is_empty()
    }

    pub fn counts(&self) -> DebuginfodCounts {
        self.debuginfod
            .as_ref()
            .map(|d| d.counts)
            .unwrap_or_default()
    }
}
