//! The top-writers tables: writes and pages by process, by region, and by stack (its
//! leaf frames), each with the first and last time, largest first.

use std::{collections::HashMap, hash::Hash, io::Write};

use anyhow::Result;

use super::write_stream::{Stream, Write as Writes};

/// Totals of one row.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    pub writes: u64,
    pub pages: u64,
    pub first_ts: String,
    pub last_ts: String,
}

impl Totals {
    fn add(&mut self, write: &Writes) {
        self.writes += write.count;
        self.pages += write.pages;
        if self.first_ts.is_empty() || write.first_ts < self.first_ts {
            self.first_ts.clone_from(&write.first_ts);
        }
        if write.last_ts > self.last_ts {
            self.last_ts.clone_from(&write.last_ts);
        }
    }
}

/// Rows keyed by `key`, largest `writes` first (ties by key).
pub fn rank<K: Hash + Eq + Ord + Clone>(
    writes: &[Writes],
    key: impl Fn(&Writes) -> K,
) -> Vec<(K, Totals)> {
    let mut rows: HashMap<K, Totals> = HashMap::new();
    for write in writes {
        rows.entry(key(write)).or_default().add(write);
    }
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by(|(ka, a), (kb, b)| b.writes.cmp(&a.writes).then_with(|| ka.cmp(kb)));
    rows
}

/// "leaf <- caller <- caller" from the three innermost frames.
pub fn leaf_frames(write: &Writes) -> String {
    match write.stack.is_empty() {
        true => "[no stack]".into(),
        false => write
            .stack
            .iter()
            .take(3)
            .cloned()
            .collect::<Vec<_>>()
            .join(" <- "),
    }
}

pub fn print(stream: &Stream, top: usize, out: &mut impl Write) -> Result<()> {
    let total: u64 = stream.writes.iter().map(|w| w.count).sum();
    let processes = rank(&stream.writes, |w| {
        (w.pid, w.comm.clone(), w.exe.clone().unwrap_or_default())
    });
    let regions = rank(&stream.writes, |w| w.region.clone());
    let stacks = rank(&stream.writes, leaf_frames);
    writeln!(
        out,
        "map-audit report: {total} writes in {} write_fault events; {} watched writes in {} write_watch events; {} processes, {} regions, {} stacks; {} other events, {} malformed lines skipped",
        stream.writes.len(),
        stream.watched.iter().map(|w| w.count).sum::<u64>(),
        stream.watched.len(),
        processes.len(),
        regions.len(),
        stacks.len(),
        stream.other_events,
        stream.malformed_lines
    )?;
    // A stream of `watch` alone has no fault tables to show.
    if !stream.writes.is_empty() || stream.watched.is_empty() {
        section(
            out,
            "processes (pid comm exe)",
            &processes,
            top,
            |(pid, comm, exe)| format!("{pid} {comm} {exe}"),
        )?;
        section(
            out,
            "regions (path prot size)",
            &regions,
            top,
            ToString::to_string,
        )?;
        section(out, "stacks (leaf <- callers)", &stacks, top, Clone::clone)?;
    }
    if !stream.watched.is_empty() {
        let watched = rank(&stream.watched, |w| {
            (w.region.path.clone().unwrap_or_default(), leaf_frames(w))
        });
        section(
            out,
            "watched writes (watch: leaf <- callers)",
            &watched,
            top,
            |(watch, stack)| format!("{watch}: {stack}"),
        )?;
    }
    Ok(())
}

fn section<K>(
    out: &mut impl Write,
    title: &str,
    rows: &[(K, Totals)],
    top: usize,
    label: impl Fn(&K) -> String,
) -> Result<()> {
    writeln!(
        out,
        "\ntop {} of {} {title}",
        top.min(rows.len()),
        rows.len()
    )?;
    writeln!(
        out,
        "{:>12} {:>10}  {:<30}  {:<30}  what",
        "writes", "pages", "first", "last"
    )?;
    for (key, totals) in rows.iter().take(top) {
        writeln!(
            out,
            "{:>12} {:>10}  {:<30}  {:<30}  {}",
            totals.writes,
            totals.pages,
            totals.first_ts,
            totals.last_ts,
            label(key)
        )?;
    }
    Ok(())
}
