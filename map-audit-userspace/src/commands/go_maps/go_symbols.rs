//! Names for Go stack frames from the binary's `.gopclntab` function table: it covers
//! every Go function, stripped binaries included, and needs no DWARF. Frames get the
//! function, offset, file and line (of the innermost inlined code at that address; the
//! name is the function the code was inlined into). Frames outside the Go binary's
//! functions (cgo's C code, libc, the vDSO) go to the symboliser of `run`, with the
//! process's /proc snapshot: debug files, `symbol_missing` and `module_offset` alike.

use std::{collections::HashMap, sync::Arc};

use super::pclntab::FunctionTable;
use crate::{
    output::events::{Frame, hex},
    proc::process_maps::ProcessMaps,
    stacks::{exec_image::ImageMap, symbolizer::StackSymbolizer},
};

pub struct GoSymbols {
    functions: Arc<FunctionTable>,
    module: Arc<str>,
    /// Runtime address minus link-time address (non-zero for PIE binaries), learnt
    /// from each record: its first frame is a hook whose link address is known.
    load_bias: u64,
    names: HashMap<u64, Arc<str>>,
    /// (file, line) by looked-up address.
    lines: HashMap<u64, Option<(Arc<str>, u32)>>,
    /// For frames outside the Go functions.
    native: StackSymbolizer,
    pid: u32,
    /// The process's /proc snapshot, read at the first native frame, read again when
    /// an address is in none of its mappings (a library loaded since).
    maps: Option<Arc<ProcessMaps>>,
    /// When it was last read: at most once a second (stacks walked past their end
    /// hold addresses in no mapping).
    maps_read: Option<std::time::Instant>,
}

impl GoSymbols {
    pub fn new(functions: Arc<FunctionTable>, module: &str, pid: u32) -> Self {
        Self {
            functions,
            module: module.into(),
            load_bias: 0,
            names: HashMap::new(),
            lines: HashMap::new(),
            native: StackSymbolizer::default(),
            pid,
            maps: None,
            maps_read: None,
        }
    }

    pub fn set_load_bias(&mut self, bias: u64) {
        self.load_bias = bias;
    }

    pub fn load_bias(&self) -> u64 {
        self.load_bias
    }

    pub fn functions(&self) -> &FunctionTable {
        &self.functions
    }

    /// Frames for `addrs`, innermost first, the first an exact address and the rest
    /// return addresses; also how many have no function.
    pub fn frames(&mut self, addrs: &[u64]) -> (Vec<Frame>, u64) {
        let mut unknown = 0;
        let mut frames = Vec::with_capacity(addrs.len());
        for (i, &addr) in addrs.iter().enumerate() {
            let frame = self.frame(addr, i > 0);
            if frame.module.is_none() {
                let (native, named) = self.native_frames(addr, i > 0);
                unknown += u64::from(!named);
                frames.extend(native);
                continue;
            }
            unknown += u64::from(frame.symbol.is_none());
            frames.push(frame);
        }
        (frames, unknown)
    }

    /// The frames of an address outside the Go functions (inlined callees first), and
    /// whether it has a name.
    fn native_frames(&mut self, addr: u64, return_address: bool) -> (Vec<Frame>, bool) {
        let stale = self.maps.as_ref().is_none_or(|m| m.find(addr).is_none())
            && self
                .maps_read
                .is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1));
        if stale {
            self.maps_read = Some(std::time::Instant::now());
            if let Some(maps) = ProcessMaps::read(self.pid) {
                self.maps = Some(Arc::new(maps));
            }
        }
        let maps = self.maps.clone().unwrap_or_default();
        self.native
            .symbolize_one(&maps, &ImageMap::default(), addr, return_address)
    }

    /// "main.f+0x4b", or the hex address when no function holds it.
    pub fn call_site(&mut self, return_address: u64) -> String {
        let frame = self.frame(return_address, true);
        match (frame.symbol, frame.offset) {
            (Some(symbol), Some(offset)) => format!("{symbol}+{offset:#x}"),
            _ => frame.addr,
        }
    }

    fn frame(&mut self, addr: u64, return_address: bool) -> Frame {
        let link = addr.wrapping_sub(self.load_bias);
        // A return address follows its call: look up the call itself.
        let lookup = if return_address {
            link.saturating_sub(1)
        } else {
            link
        };
        let Some(function) = self.functions.at(lookup) else {
            return Frame::at(hex(addr));
        };
        let entry = function.entry;
        let symbol = self
            .names
            .entry(entry)
            .or_insert_with(|| function.name.as_str().into())
            .clone();
        let functions = &self.functions;
        let (file, line) = self
            .lines
            .entry(lookup)
            .or_insert_with(|| {
                let (file, line) = functions.source_line(function, lookup)?;
                Some((file.into(), line))
            })
            .clone()
            .unzip();
        Frame {
            module: Some(self.module.clone()),
            symbol: Some(symbol),
            offset: Some(link - entry),
            file,
            line,
            ..Frame::at(hex(addr))
        }
    }
}
