//! User-stack symbolisation with blazesym.
//!
//! One long-lived `blazesym::symbolize::Symbolizer` (it is the unit of caching: ELF and
//! DWARF data parsed once are reused for every later stack). It is not `Sync`, so it
//! lives on the pipeline thread only. A process's memory map is cached at its first
//! event, so stacks still resolve after the process has exited.

use std::collections::HashSet;

use blazesym::{
    Pid,
    symbolize::{
        Input, Symbolized, Symbolizer,
        cache::{self, Cache},
        source::{self, Source},
    },
};

use crate::events::{Frame, hex};

pub struct StackSymbolizer {
    inner: Symbolizer,
    /// Processes whose memory map is cached.
    cached: HashSet<u32>,
}

/// A symbolised stack and how many of its frames stayed unknown.
pub struct SymbolizedStack {
    pub frames: Vec<Frame>,
    pub unknown_frames: u64,
}

impl StackSymbolizer {
    pub fn new() -> Self {
        Self { inner: Symbolizer::new(), cached: HashSet::new() }
    }

    /// Caches `pid`'s memory map once, so later stacks resolve even after it exits.
    pub fn remember_process(&mut self, pid: u32) {
        if self.cached.insert(pid) {
            self.refresh_process(pid);
        }
    }

    /// Re-reads `pid`'s memory map (it may have loaded new objects). Fails quietly when
    /// the process is gone: the earlier cache stays in use.
    fn refresh_process(&self, pid: u32) {
        let mut process = cache::Process::new(Pid::from(pid));
        process.cache_perf_map = false;
        if let Err(err) = self.inner.cache(&Cache::Process(process)) {
            log::debug!("caching the memory map of pid {pid} failed: {err}");
        }
    }

    /// Forgets a process that has exited.
    pub fn forget_process(&mut self, pid: u32) {
        self.cached.remove(&pid);
    }

    /// Symbolises `addrs` (innermost first) of process `pid`. If frames stay unknown and
    /// the process is still alive, its map is re-read once (it may have loaded a library
    /// since the cache was taken).
    pub fn symbolize(&mut self, pid: u32, addrs: &[u64]) -> SymbolizedStack {
        self.remember_process(pid);
        let stack = self.symbolize_once(pid, addrs);
        if stack.unknown_frames > 0 && std::path::Path::new(&format!("/proc/{pid}")).exists() {
            self.refresh_process(pid);
            return self.symbolize_once(pid, addrs);
        }
        stack
    }

    fn symbolize_once(&self, pid: u32, addrs: &[u64]) -> SymbolizedStack {
        let mut process = source::Process::new(Pid::from(pid));
        // Paths from the cached maps, not /proc/PID/map_files: those vanish at exit.
        process.map_files = false;
        process.perf_map = false;
        let src = Source::Process(process);
        // Outer frames are return addresses: look up the call instruction before them.
        let lookup: Vec<u64> = addrs
            .iter()
            .enumerate()
            .map(|(i, &a)| if i == 0 { a } else { a.saturating_sub(1) })
            .collect();
        let results = match self.inner.symbolize(&src, Input::AbsAddr(&lookup)) {
            Ok(results) => results,
            Err(err) => {
                log::debug!("symbolizing a stack of pid {pid} failed: {err}");
                return SymbolizedStack {
                    frames: addrs.iter().map(|&a| unknown_frame(a)).collect(),
                    unknown_frames: addrs.len() as u64,
                };
            }
        };
        let mut frames = Vec::with_capacity(addrs.len());
        let mut unknown_frames = 0;
        for ((&addr, &looked_up), result) in addrs.iter().zip(&lookup).zip(results) {
            match result {
                Symbolized::Sym(sym) => {
                    let module = sym.module.as_ref().map(|m| m.to_string_lossy().into_owned());
                    // Inlined callees first (innermost first), then the function they sit in.
                    for inlined in sym.inlined.iter().rev() {
                        let (file, line) = code_location(inlined.code_info.as_ref());
                        frames.push(Frame {
                            addr: hex(addr),
                            symbol: Some(inlined.name.to_string()),
                            offset: None,
                            module: module.clone(),
                            file,
                            line,
                            inlined: true,
                        });
                    }
                    let (file, line) = code_location(sym.code_info.as_deref());
                    frames.push(Frame {
                        addr: hex(addr),
                        symbol: Some(sym.name.to_string()),
                        offset: Some(sym.offset as u64 + (addr - looked_up)),
                        module,
                        file,
                        line,
                        inlined: false,
                    });
                }
                Symbolized::Unknown(_) => {
                    unknown_frames += 1;
                    frames.push(unknown_frame(addr));
                }
            }
        }
        SymbolizedStack { frames, unknown_frames }
    }
}

fn unknown_frame(addr: u64) -> Frame {
    Frame { addr: hex(addr), symbol: None, offset: None, module: None, file: None, line: None, inlined: false }
}

fn code_location(info: Option<&blazesym::symbolize::CodeInfo<'_>>) -> (Option<String>, Option<u32>) {
    match info {
        Some(info) => (Some(info.to_path().to_string_lossy().into_owned()), info.line),
        None => (None, None),
    }
}
