//! Text the kernel captured: a file's path as its dentry walk found it at mmap time,
//! and NUL-terminated strings (comms, names). The bytes come from the kernel and are
//! only trusted as far as checked here.

use map_audit_common::records::MappedFileRecord;

use crate::proc::mount_points;

/// A NUL-terminated kernel string (a comm, a dentry name) as text.
pub fn kernel_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// A file's path as the kernel captured it at mmap time.
pub struct CapturedPath {
    pub path: String,
    /// Cut short: deeper than the kernel walks (a leading "..."), or a name longer
    /// than its buffer (ending in "...").
    pub cut: bool,
}

/// The path in `record` under `mount_point`; `None` when the kernel captured no name.
/// The record's bytes come from the kernel and are only trusted as far as checked here.
pub fn captured_path(record: &MappedFileRecord, mount_point: Option<&str>) -> Option<CapturedPath> {
    let depth = (record.depth as usize).min(record.names.len());
    if depth == 0 {
        return None;
    }
    let names: Vec<String> = record.names[..depth]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut name = kernel_string(n);
            if record.cut_names & (1 << i) != 0 {
                name.push_str("...");
            }
            name
        })
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut path = mount_points::join(mount_point, &names);
    if record.truncated != 0 {
        path.insert_str(0, "...");
    }
    Some(CapturedPath {
        path,
        cut: record.truncated != 0 || record.cut_names != 0,
    })
}
