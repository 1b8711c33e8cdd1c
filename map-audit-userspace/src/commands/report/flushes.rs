//! The flushes table: who flushes which file with msync, how often, how long, and how
//! many written pages each flush found, by process, file and caller.

use std::{collections::HashMap, io::Write};

use anyhow::Result;

use super::write_stream::Flush;

/// Totals of one row.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlushTotals {
    pub calls: u64,
    pub failed: u64,
    pub duration_ns: u64,
    pub pages: u64,
}

/// "caller <- its caller": the two frames above libc's msync.
fn caller(flush: &Flush) -> String {
    match flush.stack.get(1..) {
        Some(callers) if !callers.is_empty() => callers
            .iter()
            .take(2)
            .cloned()
            .collect::<Vec<_>>()
            .join(" <- "),
        _ => "[no caller]".into(),
    }
}

/// Rows by (pid, comm, file, caller), most calls first (ties by key).
pub fn rank(flushes: &[Flush]) -> Vec<((u32, String, String, String), FlushTotals)> {
    let mut rows: HashMap<_, FlushTotals> = HashMap::new();
    for flush in flushes {
        let key = (
            flush.pid,
            flush.comm.clone(),
            flush.region.to_string(),
            caller(flush),
        );
        let row = rows.entry(key).or_default();
        row.calls += flush.count;
        row.failed += if flush.failed { flush.count } else { 0 };
        row.duration_ns += flush.duration_ns;
        row.pages += flush.pages;
    }
    let mut rows: Vec<_> = rows.into_iter().collect();
    rows.sort_by(|(ka, a), (kb, b)| b.calls.cmp(&a.calls).then_with(|| ka.cmp(kb)));
    rows
}

pub fn print(flushes: &[Flush], top: usize, out: &mut impl Write) -> Result<()> {
    let rows = rank(flushes);
    writeln!(
        out,
        "\ntop {} of {} flushes (pid comm: file <- caller)",
        top.min(rows.len()),
        rows.len()
    )?;
    writeln!(
        out,
        "{:>8} {:>7} {:>12} {:>10} {:>10}  what",
        "calls", "failed", "total ms", "mean us", "pages"
    )?;
    for ((pid, comm, file, caller), totals) in rows.iter().take(top) {
        writeln!(
            out,
            "{:>8} {:>7} {:>12.3} {:>10.1} {:>10}  {pid} {comm}: {file} <- {caller}",
            totals.calls,
            totals.failed,
            totals.duration_ns as f64 / 1e6,
            totals.duration_ns as f64 / 1e3 / totals.calls.max(1) as f64,
            totals.pages,
        )?;
    }
    Ok(())
}
