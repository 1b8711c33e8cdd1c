//! Names for Go stack frames from the binary's `.gopclntab` function table: it covers
//! every Go function, stripped binaries included, and needs no DWARF. Frames get the
//! function, offset, file and line (of the innermost inlined code at that address; the
//! name is the function the code was inlined into).

use std::{collections::HashMap, sync::Arc};

use super::pclntab::FunctionTable;
use crate::output::events::{Frame, hex};

pub struct GoSymbols {
    functions: FunctionTable,
    module: Arc<str>,
    /// Runtime address minus link-time address (non-zero for PIE binaries), learnt
    /// from each record: its first frame is a hook whose link address is known.
    load_bias: u64,
    names: HashMap<u64, Arc<str>>,
    /// (file, line) by looked-up address.
    lines: HashMap<u64, Option<(Arc<str>, u32)>>,
}

impl GoSymbols {
    pub fn new(functions: FunctionTable, module: &str) -> Self {
        Self {
            functions,
            module: module.into(),
            load_bias: 0,
            names: HashMap::new(),
            lines: HashMap::new(),
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
        let frames = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| {
                let frame = self.frame(addr, i > 0);
                unknown += u64::from(frame.symbol.is_none());
                frame
            })
            .collect();
        (frames, unknown)
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
            return Frame {
                addr: hex(addr),
                module: None,
                symbol: None,
                offset: None,
                file: None,
                line: None,
                inlined: false,
                module_offset: None,
                module_address: None,
                module_build_id: None,
                symbol_missing: None,
            };
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
            addr: hex(addr),
            module: Some(self.module.clone()),
            symbol: Some(symbol),
            offset: Some(link - entry),
            file,
            line,
            inlined: false,
            module_offset: None,
            module_address: None,
            module_build_id: None,
            symbol_missing: None,
        }
    }
}
