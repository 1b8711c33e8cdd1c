//! `map-audit report [FILE|-]`: reads a map-audit JSON-lines stream (aggregated or
//! every-event) and prints who writes: top processes, regions and stacks, and who
//! flushes (msync), or a flame graph (`--flamegraph`) or collapsed stacks (`--folded`).
//! Data flow: `write_stream` (lines -> writes and flushes, malformed lines counted) ->
//! `top_writers` and `flushes` (tables) or `folded_stacks` (-> inferno); with
//! `--resymbolize`, `resymbolize` names frames the stream recorded unnamed.

pub mod flushes;
pub mod folded_stacks;
pub mod resymbolize;
pub mod top_writers;
pub mod write_stream;

use std::{
    fs::File,
    io::{self, BufRead, BufReader, BufWriter, Write},
};

use anyhow::{Context, Result, bail};

use crate::commands::cli::ReportArgs;

pub fn run(args: &ReportArgs) -> Result<i32> {
    let input: Box<dyn BufRead> = match args.input.as_deref() {
        None | Some("-") => Box::new(BufReader::new(io::stdin().lock())),
        Some(path) => Box::new(BufReader::new(
            File::open(path).with_context(|| format!("cannot open {path}"))?,
        )),
    };
    let mut resymbolizer = match args.resymbolize {
        true => Some(resymbolize::Resymbolizer::new(
            &args.debuginfod.servers(),
            args.debuginfod.cache_dir(),
        )?),
        false => None,
    };
    let stream = write_stream::read(input, resymbolizer.as_mut())?;
    if let Some(names) = &resymbolizer {
        eprintln!(
            "map-audit report: --resymbolize named {} frame address(es), {} stayed unnamed",
            names.named, names.unnamed
        );
    }
    if stream.malformed_lines > 0 {
        eprintln!(
            "map-audit report: skipped {} malformed line(s) (first at line {})",
            stream.malformed_lines,
            stream.first_malformed_line.unwrap_or(0)
        );
    }
    // Flame graphs show both kinds of write; a watched write is rooted at its watch
    // with `--group-by region`.
    let all_writes: Vec<_> = stream
        .writes
        .iter()
        .chain(&stream.watched)
        .cloned()
        .collect();
    if all_writes.is_empty() && (args.folded.is_some() || args.flamegraph.is_some()) {
        // Said here, before inferno would log its own "No stack counts found".
        bail!(
            "no write_fault or write_watch events in {}: {} other events, {} malformed lines; a stream from `map-audit run` or `watch` has them",
            args.input
                .as_deref()
                .filter(|i| *i != "-")
                .unwrap_or("stdin"),
            stream.other_events,
            stream.malformed_lines
        );
    }
    if let Some(path) = &args.folded {
        let mut out = create(path)?;
        for line in folded_stacks::lines(&all_writes, args.group_by) {
            writeln!(out, "{line}")?;
        }
        out.flush()
            .with_context(|| format!("writing {} failed", path.display()))?;
    }
    if let Some(path) = &args.flamegraph {
        let lines = folded_stacks::lines(&all_writes, args.group_by);
        folded_stacks::flamegraph(&lines, create(path)?)
            .with_context(|| format!("writing the flame graph {} failed", path.display()))?;
    }
    if args.folded.is_none() && args.flamegraph.is_none() || args.table {
        let mut out = BufWriter::new(io::stdout().lock());
        top_writers::print(&stream, args.top, &mut out)?;
        if !stream.flushes.is_empty() {
            flushes::print(&stream.flushes, args.top, &mut out)?;
        }
        out.flush()?;
    }
    Ok(0)
}

fn create(path: &std::path::Path) -> Result<BufWriter<File>> {
    Ok(BufWriter::new(File::create(path).with_context(|| {
        format!("cannot create {}", path.display())
    })?))
}
