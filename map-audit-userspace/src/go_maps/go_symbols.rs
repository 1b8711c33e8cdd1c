//! Names for Go stack frames from the binary's `.gopclntab` function table: it covers
//! every Go function, stripped binaries included, and needs no DWARF. Frames get the
//! function and offset; file and line stay null (not decoded from the pc tables).

use std::{collections::HashMap, sync::Arc};

use super::pclntab::FunctionTable;
use crate::events::{Frame, hex};

pub struct GoSymbols {
    functions: FunctionTable,
    module: Arc<str>,
    /// Runtime address minus link-time address (non-zero for PIE binaries), learnt
    /// from each record: its first frame is a hook whose link address is known.
    load_bias: u64,
    names: HashMap<u64, Arc<str>>,
}

impl GoSymbols {
    pub fn new(functions: FunctionTable, module: &str) -> Self {
        Self {
            functions,
            module: module.into(),
            load_bias: 0,
            names: HashMap::new(),
        }
    }

    pub fn set_load_bias(&mut self, bias: u64) {
        self.load_bias = bias;
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
        let function = self
            .functions
            .at(lookup)
            .map(|f| (f.entry, f.name.as_str()));
        let (symbol, offset) = match function {
            Some((entry, name)) => {
                let symbol = self
                    .names
                    .entry(entry)
                    .or_insert_with(|| name.into())
                    .clone();
                (Some(symbol), Some(link - entry))
            }
            None => (None, None),
        };
        Frame {
            addr: hex(addr),
            module: symbol.is_some().then(|| self.module.clone()),
            symbol,
            offset,
            file: None,
            line: None,
            inlined: false,
        }
    }
}
