//! Collapsed ("folded") stacks, one line per distinct stack: frames root first joined
//! by ';', then the write count. The input of inferno's flame graph, and of other
//! flame-graph tools with `--folded`.

use std::{collections::BTreeMap, io::Write};

use anyhow::Result;
use inferno::flamegraph::{self, Options};

use super::write_stream::{GroupBy, Write as Writes};

/// Lines sorted by stack (what flamegraph tools expect).
pub fn lines(writes: &[Writes], group_by: GroupBy) -> Vec<String> {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for write in writes {
        let mut frames: Vec<String> = Vec::with_capacity(write.stack.len() + 1);
        match group_by {
            GroupBy::None => {}
            GroupBy::Process => frames.push(format!("{} ({})", write.comm, write.pid)),
            GroupBy::Region => frames.push(write.region.to_string()),
            GroupBy::Container => {
                frames.push(write.container.clone().unwrap_or_else(|| "[host]".into()))
            }
            GroupBy::Pod => frames.push(write.pod.clone().unwrap_or_else(|| "[no pod]".into())),
        }
        frames.extend(write.stack.iter().rev().cloned());
        if frames.is_empty() {
            frames.push("[no stack]".into());
        }
        // ';' separates frames in the folded format.
        let stack = frames
            .iter()
            .map(|f| f.replace(';', ":"))
            .collect::<Vec<_>>()
            .join(";");
        *counts.entry(stack).or_default() += write.count;
    }
    counts
        .into_iter()
        .map(|(stack, count)| format!("{stack} {count}"))
        .collect()
}

/// An SVG flame graph of `lines`, widths by write count.
pub fn flamegraph(lines: &[String], out: impl Write) -> Result<()> {
    let mut options = Options::default();
    options.title = "map-audit: who writes into memory mappings".into();
    options.count_name = "writes".into();
    flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)?;
    Ok(())
}
