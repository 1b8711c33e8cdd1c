//! Tracepoint `format` files from tracefs: any text gives an offset or nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_audit::kernel::tracefs::parse_field_offset;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(format) = std::str::from_utf8(bytes) {
        let _ = parse_field_offset(format, "address");
        let _ = parse_field_offset(format, "error_code");
    }
});
