//! User-stack symbolisation with blazesym.
//!
//! One long-lived `blazesym::symbolize::Symbolizer`: it is the unit of caching (ELF and
//! DWARF data parsed once serve every later stack), and it is not `Sync`, so it lives
//! on the pipeline thread. Addresses are turned into (file, file offset) with the
//! reader's /proc snapshot first, so stacks of processes that have already exited
//! still resolve as long as their files exist.

use std::{cell::RefCell, ffi::OsString, path::Path, rc::Rc, sync::Arc};

use blazesym::symbolize::{
    CodeInfo, Input, Sym, Symbolized, Symbolizer,
    source::{Elf, Kernel, Source},
};

use foldhash::HashMap as FoldHashMap;

use crate::{
    output::addresses,
    output::events::{Frame, SymbolMissing, hex},
    proc::process_maps::{MapEntry, ProcessMaps},
    stacks::{
        debug_files::DebugFiles,
        debuginfod::{Debuginfod, DebuginfodCounts},
        exec_image::ImageMap,
    },
};

pub struct StackSymbolizer {
    inner: Symbolizer,
    /// Frames by (file, file offset): each code address is symbolised once. Looked up
    /// per frame, so keyed by the path's bytes with foldhash (a `Path` key hashes
    /// component by component with SipHash: ~17% of the every-event pipeline).
    cache: RefCell<FoldHashMap<OsString, FoldHashMap<u64, Resolved>>>,
    /// Debug files fetched from debuginfod servers.
    debug: RefCell<DebugFiles>,
}

/// The frames of one code address, `addr` left empty.
type FrameTemplate = Rc<Vec<Frame>>;

/// Why a user frame has no name (its `symbol_missing`).
type Unnamed = SymbolMissing;

/// A code address looked up: its frames, or why it has none.
type Resolved = Result<FrameTemplate, Unnamed>;
/// The address is in no file-backed executable mapping (JIT, anonymous code).
const NO_MODULE: Unnamed = SymbolMissing::NoModule;
/// The module has no symbol there (stripped, no debug file found).
const NO_SYMBOLS: Unnamed = SymbolMissing::NoSymbols;
/// The module could not be opened or parsed (gone, unreadable, not ELF).
const MODULE_UNREADABLE: Unnamed = SymbolMissing::ModuleUnreadable;
/// The module's debug file was still being fetched.
const DEBUGINFO_PENDING: Unnamed = SymbolMissing::DebuginfoPending;

/// Cached code addresses before the cache starts over (bounds the agent's memory).
const CACHE_ENTRIES: usize = 100_000;

/// A symbolised stack and how many of its frames stayed unknown.
pub struct SymbolizedStack {
    pub frames: Vec<Frame>,
    pub unknown_frames: u64,
}

impl Default for StackSymbolizer {
    fn default() -> Self {
        Self::new(None)
    }
}

impl StackSymbolizer {
    /// With `debuginfod`, modules without debug information here are asked for.
    pub fn new(debuginfod: Option<Debuginfod>) -> Self {
        Self {
            inner: Symbolizer::new(),
            cache: RefCell::new(FoldHashMap::default()),
            debug: RefCell::new(DebugFiles::new(debuginfod)),
        }
    }

    /// An executable module was mapped: its debug file is asked for now if it is
    /// needed, well before the first stack through it is reported.
    pub fn module_mapped(&self, path: &Path) {
        self.debug.borrow_mut().module_seen(path);
    }

    /// Takes the debug files that arrived (waiting up to `wait` for one); true when
    /// names resolved before may have changed (the caller drops what it rendered).
    pub fn poll_debug_files(&self, wait: std::time::Duration) -> bool {
        let changed = self.debug.borrow_mut().poll(wait);
        if changed {
            self.cache.borrow_mut().clear();
        }
        changed
    }

    pub fn fetches_debug_files(&self) -> bool {
        self.debug.borrow().fetches()
    }

    pub fn debug_files_pending(&self) -> bool {
        self.debug.borrow().any_pending()
    }

    pub fn debuginfod_counts(&self) -> DebuginfodCounts {
        self.debug.borrow().counts()
    }

    /// Some frame of `addrs` is in a module whose debug file is being fetched.
    pub fn waits_for_debug_file(
        &self,
        maps: &ProcessMaps,
        image: &ImageMap,
        addrs: &[u64],
    ) -> bool {
        let mut debug = self.debug.borrow_mut();
        if !debug.fetches() {
            return false;
        }
        let mut waits = false;
        for &addr in addrs {
            if let Some((entry, path)) = module_at(maps, image, addr.saturating_sub(1)) {
                let read_path = entry.read_path().unwrap_or(path);
                // A module first seen here (one the agent could not look at when it
                // was mapped: another mount namespace) is asked for now.
                debug.module_seen(read_path);
                waits |= debug.pending(read_path);
            }
        }
        waits
    }

    /// Symbolises `addrs` (innermost first) against `maps`.
    pub fn symbolize(
        &self,
        maps: &ProcessMaps,
        image: &ImageMap,
        addrs: &[u64],
    ) -> SymbolizedStack {
        let started = crate::output::metrics::get().map(|_| std::time::Instant::now());
        let mut frames = Vec::with_capacity(addrs.len());
        let mut unknown_frames = 0;
        for (i, &addr) in addrs.iter().enumerate() {
            // Outer frames are return addresses: look up the call instruction before them.
            let lookup = if i == 0 { addr } else { addr.saturating_sub(1) };
            if !self.push_frames(maps, image, addr, lookup, &mut frames) {
                unknown_frames += 1;
            }
        }
        if let (Some(metrics), Some(started)) = (crate::output::metrics::get(), started) {
            metrics.symbolized(started.elapsed().as_secs_f64());
        }
        SymbolizedStack {
            frames,
            unknown_frames,
        }
    }

    /// The frames of one address (inlined callees first), a return address when
    /// `return_address`; and whether it has a name.
    pub fn symbolize_one(
        &self,
        maps: &ProcessMaps,
        image: &ImageMap,
        addr: u64,
        return_address: bool,
    ) -> (Vec<Frame>, bool) {
        let lookup = if return_address {
            addr.saturating_sub(1)
        } else {
            addr
        };
        let mut frames = Vec::new();
        let named = self.push_frames(maps, image, addr, lookup, &mut frames);
        (frames, named)
    }

    /// Symbolises kernel addresses (innermost first) with /proc/kallsyms, without the
    /// leading frames of the tracer itself (the BPF program and its trampoline).
    pub fn symbolize_kernel(&self, addrs: &[u64]) -> SymbolizedStack {
        let mut stack = self.symbolize_kernel_frames(addrs);
        let tracer = stack
            .frames
            .iter()
            .take_while(|f| {
                f.symbol
                    .as_deref()
                    .is_some_and(|s| s.starts_with("bpf_prog_") || s.starts_with("bpf_trace_run"))
            })
            .count();
        stack.frames.drain(..tracer);
        stack
    }

    fn symbolize_kernel_frames(&self, addrs: &[u64]) -> SymbolizedStack {
        let src = Source::Kernel(Kernel::default());
        let results = self
            .inner
            .symbolize(&src, Input::AbsAddr(addrs))
            .unwrap_or_else(|err| {
                log::debug!("symbolizing a kernel stack failed: {err}");
                Vec::new()
            });
        let mut unknown_frames = 0;
        let frames = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| match results.get(i) {
                Some(Symbolized::Sym(sym)) => Frame {
                    symbol: Some(sym.name.as_ref().into()),
                    offset: Some(sym.offset as u64),
                    module: sym.module.as_ref().map(|m| m.to_string_lossy().into()),
                    ..Frame::at(addresses::kernel_frame(addr))
                },
                _ => {
                    unknown_frames += 1;
                    Frame::at(addresses::kernel_frame(addr))
                }
            })
            .collect();
        SymbolizedStack {
            frames,
            unknown_frames,
        }
    }

    /// Pushes the frames for one address (inlined callees first). Returns false, after
    /// pushing a frame with what is known, when there is no symbol.
    fn push_frames(
        &self,
        maps: &ProcessMaps,
        image: &ImageMap,
        addr: u64,
        lookup: u64,
        frames: &mut Vec<Frame>,
    ) -> bool {
        let unknown = |module: Option<Arc<str>>, file_offset: Option<u64>, why: Unnamed| Frame {
            module,
            module_offset: file_offset.map(hex),
            symbol_missing: Some(why),
            ..Frame::at(addresses::user_frame(addr, file_offset))
        };
        let Some((entry, path)) = module_at(maps, image, lookup) else {
            log::trace!(
                "{addr:#x} is in no executable file mapping ({} entries known)",
                maps.entry_count()
            );
            frames.push(unknown(None, None, NO_MODULE));
            return false;
        };
        let file_offset = lookup - entry.start + entry.offset;
        let addr_offset = addr - entry.start + entry.offset;
        let cache_key = cache_key(entry, path);
        let cached = self
            .cache
            .borrow()
            .get(&cache_key)
            .and_then(|by_offset| by_offset.get(&file_offset).cloned());
        let template = match cached {
            Some(template) => template,
            None => {
                let module: Arc<str> = module_name(path);
                let read_path = entry.read_path().unwrap_or(path);
                let template = self.resolve(read_path, file_offset, module);
                let mut cache = self.cache.borrow_mut();
                let entries = cache.values().map(FoldHashMap::len).sum::<usize>();
                if entries >= CACHE_ENTRIES {
                    if let Some(metrics) = crate::output::metrics::get() {
                        metrics.cache_evicted("symbols", entries as u64);
                    }
                    cache.clear();
                }
                cache
                    .entry(cache_key)
                    .or_default()
                    .insert(file_offset, template.clone());
                template
            }
        };
        let template = match template {
            Ok(template) => template,
            Err(why) => {
                let mut frame = unknown(Some(module_name(path)), Some(addr_offset), why);
                let read_path = entry.read_path().unwrap_or(path);
                if let Some(module) = self.debug.borrow_mut().describe(read_path) {
                    frame.module_address = module.virtual_offset(addr_offset).map(hex);
                    frame.module_build_id = module.build_id.clone();
                }
                frames.push(frame);
                return false;
            }
        };
        // The template's offsets are relative to `lookup`; a return address is one past.
        frames.extend(template.iter().map(|f| Frame {
            addr: addresses::user_frame(addr, Some(addr_offset)),
            offset: f.offset.map(|o| o + (addr - lookup)),
            ..f.clone()
        }));
        true
    }

    /// The frames (without `addr`) for `file_offset` in `path`, inlined callees first;
    /// why there are none when blazesym finds no symbol.
    fn resolve(&self, path: &Path, file_offset: u64, module: Arc<str>) -> Resolved {
        let mut debug = self.debug.borrow_mut();
        debug.module_seen(path);
        if let Some(fetched) = debug.fetched(path)
            && let Some(virtual_offset) = fetched.module.virtual_offset(file_offset)
            && let Ok(Symbolized::Sym(sym)) = self.inner.symbolize_single(
                &Source::Elf(Elf::new(fetched.path)),
                Input::VirtOffset(virtual_offset),
            )
        {
            return Ok(frames_of(&sym, module));
        }
        let pending = debug.pending(path);
        drop(debug);
        let src = Source::Elf(Elf::new(path));
        let sym = match self
            .inner
            .symbolize_single(&src, Input::FileOffset(file_offset))
        {
            Ok(Symbolized::Sym(sym)) => sym,
            Ok(Symbolized::Unknown(reason)) => {
                log::trace!(
                    "no symbol at offset {file_offset:#x} of {}: {reason}",
                    path.display()
                );
                return Err(if pending {
                    DEBUGINFO_PENDING
                } else {
                    NO_SYMBOLS
                });
            }
            Err(err) => {
                log::debug!(
                    "symbolizing offset {file_offset:#x} of {} failed: {err}",
                    path.display()
                );
                return Err(MODULE_UNREADABLE);
            }
        };
        Ok(frames_of(&sym, module))
    }
}

/// The executable file mapping that holds `addr`: from the /proc snapshot, else from
/// the kernel's exec records.
fn module_at<'a>(
    maps: &'a ProcessMaps,
    image: &'a ImageMap,
    addr: u64,
) -> Option<(&'a MapEntry, &'a Path)> {
    let entry = maps
        .find(addr)
        .filter(|e| e.executable)
        .or_else(|| image.find(addr))?;
    Some((entry, entry.path.as_ref()?))
}

/// The frames (without `addr`) of a symbol, inlined callees first.
fn frames_of(sym: &Sym<'_>, module: Arc<str>) -> FrameTemplate {
    let mut frames = Vec::with_capacity(1 + sym.inlined.len());
    for inlined in sym.inlined.iter().rev() {
        let (file, line) = code_location(inlined.code_info.as_ref());
        frames.push(Frame {
            symbol: Some(inlined.name.as_ref().into()),
            module: Some(module.clone()),
            file,
            line,
            inlined: true,
            ..Frame::at(String::new())
        });
    }
    let (file, line) = code_location(sym.code_info.as_deref());
    frames.push(Frame {
        symbol: Some(sym.name.as_ref().into()),
        offset: Some(sym.offset as u64),
        module: Some(module),
        file,
        line,
        ..Frame::at(String::new())
    });
    Rc::new(frames)
}

/// The symbol cache's key of a mapping's file: its path, and for a file of another
/// mount namespace its (device, inode) too (two containers may have different files at
/// one path).
fn cache_key(entry: &MapEntry, path: &Path) -> OsString {
    let mut key = path.as_os_str().to_owned();
    if let Some(file) = &entry.file {
        key.push(format!("\0{}:{}", file.identity.0, file.identity.1));
    }
    key
}

/// The module a frame names: the file, or `[vdso]` for the agent's copy of it.
fn module_name(path: &Path) -> Arc<str> {
    if crate::proc::vdso_image::path() == Some(path) {
        return crate::proc::vdso_image::MODULE.into();
    }
    path.to_string_lossy().into()
}

fn code_location(info: Option<&CodeInfo<'_>>) -> (Option<Arc<str>>, Option<u32>) {
    match info {
        Some(info) => (Some(info.to_path().to_string_lossy().into()), info.line),
        None => (None, None),
    }
}
