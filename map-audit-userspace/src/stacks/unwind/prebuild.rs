//! Tables built before a command the agent starts runs: its program, its interpreter
//! and the libraries it needs (`DT_NEEDED`, found as the dynamic loader finds them in
//! the usual places). A program writes within a millisecond of its exec, before the
//! agent could build tables from its mappings' records.

use std::{
    collections::HashSet,
    fs::File,
    path::{Path, PathBuf},
};

use object::{
    elf,
    read::elf::{Dyn, FileHeader, ProgramHeader},
};

use super::tables::{UnwindTables, key_of_path};

/// Directories the dynamic loader searches after `DT_RUNPATH` and `LD_LIBRARY_PATH`.
const SYSTEM_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// Builds the tables of `program` (a path, or a name looked up in `PATH`) and of what
/// it loads. Files that cannot be read are left to the records.
pub fn command(tables: &mut UnwindTables, program: &str) {
    let Some(path) = find_program(program) else {
        return;
    };
    let mut pending = vec![path];
    let mut seen = HashSet::new();
    while let Some(path) = pending.pop() {
        let Ok(path) = path.canonicalize() else {
            continue;
        };
        if !seen.insert(path.clone()) {
            continue;
        }
        let Ok(data) = std::fs::read(&path) else {
            continue;
        };
        pending.extend(dependencies(&data, &path));
        if let Some(key) = key_of_path(&path) {
            tables.ensure(key, || File::open(&path).ok());
        }
    }
}

fn find_program(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// The interpreter and the resolved `DT_NEEDED` libraries of the ELF file `data`.
fn dependencies(data: &[u8], path: &Path) -> Vec<PathBuf> {
    let Ok(header) = elf::FileHeader64::<object::Endianness>::parse(data) else {
        return Vec::new();
    };
    let Ok(endian) = header.endian() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if let Ok(segments) = header.program_headers(endian, data) {
        for segment in segments {
            if let Ok(Some(interp)) = segment.interpreter(endian, data) {
                out.push(PathBuf::from(String::from_utf8_lossy(interp).as_ref()));
            }
        }
    }
    let Ok(sections) = header.sections(endian, data) else {
        return out;
    };
    // The index that comes with the entries is their string table's.
    let Ok(Some((entries, strings_index))) = sections.dynamic(endian, data) else {
        return out;
    };
    let Ok(strings) = sections.strings(endian, data, strings_index) else {
        return out;
    };
    let string = |entry: &elf::Dyn64<object::Endianness>| {
        entry
            .string(endian, strings)
            .ok()
            .map(|s| String::from_utf8_lossy(s).into_owned())
    };
    let origin = path.parent().unwrap_or(Path::new("/"));
    let mut dirs: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let tag = entry.d_tag(endian) as u32;
        if tag == elf::DT_RUNPATH || tag == elf::DT_RPATH {
            for dir in string(entry).unwrap_or_default().split(':') {
                dirs.push(PathBuf::from(
                    dir.replace("$ORIGIN", &origin.to_string_lossy()),
                ));
            }
        }
    }
    if let Some(library_path) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&library_path));
    }
    dirs.extend(SYSTEM_DIRS.iter().map(PathBuf::from));
    for entry in entries {
        if entry.d_tag(endian) as u32 != elf::DT_NEEDED {
            continue;
        }
        let Some(name) = string(entry) else {
            continue;
        };
        if let Some(found) = dirs.iter().map(|d| d.join(&name)).find(|p| p.is_file()) {
            out.push(found);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dynamic_program_needs_its_interpreter_and_libc() {
        let path = Path::new("/bin/sh");
        let data = std::fs::read(path).unwrap();
        let found = dependencies(&data, path);
        let names: Vec<String> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.starts_with("ld-linux")), "{names:?}");
        assert!(names.iter().any(|n| n == "libc.so.6"), "{names:?}");
    }
}
