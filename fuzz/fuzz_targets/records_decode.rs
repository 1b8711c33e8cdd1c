//! Records from the kernel's ring buffer: decoding any bytes returns a record or an
//! error, never a panic, and a decoded file record gives a path or nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_audit::{
    pipeline::records::{Record, decode},
    pipeline::captured_paths::captured_path};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(Record::MappedFile(file)) = decode(bytes) {
        let _ = captured_path(&file, Some("/"));
    }
});
