//! Data symbols of a running process, by name: the ELF `.symtab` and `.dynsym` of its
//! program and every library it has mapped (Go globals are in `.symtab` under their Go
//! names, `main.counter`), placed at the module's load address from /proc/PID/maps.
//! Costs one read and parse of each mapped ELF file until the name is found.

use std::collections::BTreeSet;

use anyhow::{Context, Result, bail};
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};
use procfs::process::{MMapPath, Process};

/// A data symbol where the process has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSymbol {
    /// Its address in the process.
    pub address: u64,
    /// Its size in bytes (0 when the ELF does not say).
    pub size: u64,
    /// The file that defines it.
    pub module: String,
}

/// Finds `name` among the data symbols of the files `pid` has mapped, program first.
pub fn find(pid: u32, name: &str) -> Result<DataSymbol> {
    let process = Process::new(pid as i32).with_context(|| format!("pid {pid} is gone"))?;
    let maps = process
        .maps()
        .with_context(|| format!("reading /proc/{pid}/maps failed"))?;
    let mut modules: Vec<(String, Vec<(u64, u64)>)> = Vec::new();
    for map in maps.iter() {
        let MMapPath::Path(path) = &map.pathname else {
            continue;
        };
        let path = path.to_string_lossy().into_owned();
        let entry = match modules.iter_mut().find(|(p, _)| *p == path) {
            Some(entry) => entry,
            None => {
                modules.push((path, Vec::new()));
                modules.last_mut().expect("just pushed")
            }
        };
        entry.1.push((map.address.0, map.offset));
    }
    let mut names = BTreeSet::new();
    for (path, mappings) in &modules {
        // Through the process's root: the right file for a process in a container.
        let Ok(data) = std::fs::read(format!("/proc/{pid}/root{path}")) else {
            continue;
        };
        let Ok(file) = object::File::parse(&*data) else {
            continue;
        };
        let Some(bias) = load_bias(&file, mappings) else {
            continue;
        };
        for symbol in file.symbols().chain(file.dynamic_symbols()) {
            let Ok(symbol_name) = symbol.name() else {
                continue;
            };
            if symbol.kind() == SymbolKind::Tls && symbol_name == name {
                bail!(
                    "`{name}` is a thread-local variable in {path}: each thread has its own, so watch one thread's copy by --address"
                );
            }
            if symbol.kind() != SymbolKind::Data || !symbol.is_definition() {
                continue;
            }
            if symbol_name == name {
                return Ok(DataSymbol {
                    address: symbol.address().wrapping_add(bias),
                    size: symbol.size(),
                    module: path.clone(),
                });
            }
            names.insert(symbol_name.to_string());
        }
    }
    let near = near_matches(name, &names);
    if near.is_empty() {
        bail!(
            "no data symbol `{name}` in pid {pid}'s program or libraries (a stripped binary has only exported ones)"
        );
    }
    bail!(
        "no data symbol `{name}` in pid {pid}'s program or libraries; did you mean {}?",
        near.join(", ")
    )
}

/// Runtime address minus link-time address: where the segment at the lowest file
/// offset is mapped, against its link-time page.
fn load_bias(file: &object::File, mappings: &[(u64, u64)]) -> Option<u64> {
    let first = file.segments().min_by_key(|s| s.file_range().0)?;
    let page = first.file_range().0 & !0xfff;
    let (start, _) = mappings.iter().find(|(_, offset)| *offset == page)?;
    Some(start.wrapping_sub(first.address() & !0xfff))
}

/// Up to five names within a few edits of `name` or containing it, nearest first.
fn near_matches(name: &str, names: &BTreeSet<String>) -> Vec<String> {
    let lower = name.to_lowercase();
    let most_edits = (name.len() / 3).max(1);
    let mut near: Vec<(usize, &String)> = names
        .iter()
        .filter_map(|n| {
            let edits = strsim::levenshtein(&lower, &n.to_lowercase());
            (edits <= most_edits || n.to_lowercase().contains(&lower)).then_some((edits, n))
        })
        .collect();
    near.sort();
    near.into_iter()
        .take(5)
        .map(|(_, n)| format!("`{n}`"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    static WATCHED_IN_THIS_TEST: std::sync::atomic::AtomicU64 =
        std::sync::atomic::AtomicU64::new(0);

    #[test]
    fn finds_a_global_of_this_test_binary() {
        WATCHED_IN_THIS_TEST.store(1, std::sync::atomic::Ordering::Relaxed);
        let expected = std::ptr::addr_of!(WATCHED_IN_THIS_TEST) as u64;
        let pid = std::process::id();
        // Rust mangles statics; find the mangled name through the error's near matches.
        let err = find(pid, "WATCHED_IN_THIS_TEST").unwrap_err().to_string();
        let mangled = err
            .split('`')
            .find(|n| n.contains("WATCHED_IN_THIS_TEST") && *n != "WATCHED_IN_THIS_TEST")
            .unwrap_or_else(|| panic!("no near match: {err}"));
        let found = find(pid, mangled).unwrap();
        assert_eq!(found.address, expected);
        assert_eq!(found.size, 8);
    }

    #[test]
    fn suggests_near_names() {
        let names: BTreeSet<String> = ["counter", "counter_total", "other"]
            .map(String::from)
            .into();
        assert_eq!(
            near_matches("count", &names),
            ["`counter`", "`counter_total`"]
        );
        assert_eq!(near_matches("countr", &names), ["`counter`"]);
        assert!(near_matches("zzz", &names).is_empty());
    }
}
