//! `report --resymbolize`: names for frames a stream recorded unnamed (a stripped
//! module whose debug file was not at hand when it ran), found by the frame's
//! `module_build_id` and `module_address`: a debug file under
//! `/usr/lib/debug/.build-id/`, in the debuginfod cache, or fetched from debuginfod
//! servers (`--debuginfod`, else `DEBUGINFOD_URLS`). One lookup per build id and per
//! address; the module itself is not needed.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use blazesym::symbolize::{
    Input, Symbolized, Symbolizer,
    source::{Elf, Source},
};
use debuginfod::{BuildId, CachingClient, Client};

use crate::stacks::debug_lookup::DEBUG_ROOT;

pub struct Resymbolizer {
    symbolizer: Symbolizer,
    client: Option<CachingClient>,
    cache_dir: PathBuf,
    /// Debug files by build id (`None`: found nowhere).
    files: HashMap<String, Option<PathBuf>>,
    names: HashMap<(String, u64), Option<String>>,
    /// Frames named, and frames still unnamed after a lookup.
    pub named: u64,
    pub unnamed: u64,
}

impl Resymbolizer {
    /// `servers` empty: only files on this host.
    pub fn new(servers: &[String], cache_dir: PathBuf) -> Result<Self> {
        let client = Client::builder()
            .http_client(reqwest::blocking::Client::new())
            .build(servers.iter().map(String::as_str))
            .context("a --debuginfod URL (or DEBUGINFOD_URLS) is not a URL")?
            .map(|client| CachingClient::new(client, &cache_dir))
            .transpose()
            .with_context(|| {
                format!(
                    "the debuginfod cache {} cannot be made (not root?); choose one with --debuginfod-cache",
                    cache_dir.display()
                )
            })?;
        Ok(Self {
            symbolizer: Symbolizer::new(),
            client,
            cache_dir,
            files: HashMap::new(),
            names: HashMap::new(),
            named: 0,
            unnamed: 0,
        })
    }

    /// The function at `address` of the module with `build_id`.
    pub fn name(&mut self, build_id: &str, address: u64) -> Option<String> {
        // It comes from the stream, and names files: hex only.
        if build_id.len() < 4 || !build_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let key = (build_id.to_string(), address);
        if let Some(name) = self.names.get(&key) {
            return name.clone();
        }
        let name = self.debug_file(build_id).and_then(|file| {
            match self
                .symbolizer
                .symbolize_single(&Source::Elf(Elf::new(file)), Input::VirtOffset(address))
            {
                Ok(Symbolized::Sym(sym)) => Some(sym.name.into_owned()),
                _ => None,
            }
        });
        if name.is_some() {
            self.named += 1;
        } else {
            self.unnamed += 1;
        }
        self.names.insert(key, name.clone());
        name
    }

    fn debug_file(&mut self, build_id: &str) -> Option<PathBuf> {
        if let Some(file) = self.files.get(build_id) {
            return file.clone();
        }
        let local = (build_id.len() > 2)
            .then(|| {
                Path::new(DEBUG_ROOT)
                    .join(".build-id")
                    .join(&build_id[..2])
                    .join(format!("{}.debug", &build_id[2..]))
            })
            .filter(|p| p.exists());
        let cached = Some(self.cache_dir.join(build_id).join("debuginfo")).filter(|p| p.exists());
        let file = local.or(cached).or_else(|| {
            let fetched = self
                .client
                .as_ref()?
                .fetch_debug_info(&BuildId::formatted(build_id));
            fetched
                .map_err(|err| eprintln!("map-audit report: {err:#}"))
                .ok()
                .flatten()
        });
        self.files.insert(build_id.to_string(), file.clone());
        file
    }
}
