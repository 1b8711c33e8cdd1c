//! Checked decoding of ring-buffer bytes into typed records. Lengths are checked before
//! any read and reads are unaligned copies, so a short or odd record is an error value,
//! never undefined behaviour.

use map_audit_common::records::{
    CgroupRecord, DirtyPageRecord, FaultRecord, KIND_CGROUP_MADE, KIND_EXEC_IMAGE,
    KIND_KERNEL_WRITE_FAULT, KIND_MAPPED_FILE, KIND_PAGE_DIRTIED, KIND_PROCESS_EXEC,
    KIND_PROCESS_EXIT, KIND_PROCESS_FORK, KIND_PROTECT_UNRESOLVED, KIND_REGION_MAPPED,
    KIND_REGION_PROTECTED, KIND_REGION_SYNCED, KIND_REGION_UNMAPPED, KIND_REMAP_UNRESOLVED,
    KIND_UNMAP_UNRESOLVED, KIND_WATCH_WRITE, KIND_WRITE_FAULT, KIND_WRITE_FAULT_SNAPSHOT,
    KernelFaultRecord, MappedFileRecord, ProcessRecord, RecordHeader, RegionRecord,
    SnapshotFaultRecord, SyncRecord, WatchRecord,
};

/// A decoded record.
#[derive(Debug, Clone)]
pub enum Record {
    RegionMapped(RegionRecord),
    RegionUnmapped(RegionRecord),
    RegionProtected(RegionRecord),
    UnmapUnresolved(RegionRecord),
    ProtectUnresolved(RegionRecord),
    RemapUnresolved(RegionRecord),
    ExecImage(RegionRecord),
    WriteFault(Box<FaultRecord>),
    /// A fault whose walk the agent finishes (the reader turns it into `WriteFault`).
    WriteFaultSnapshot(Box<SnapshotFaultRecord>),
    KernelWriteFault(Box<KernelFaultRecord>),
    WatchWrite(Box<WatchRecord>),
    RegionSynced(Box<SyncRecord>),
    PageDirtied(DirtyPageRecord),
    MappedFile(Box<MappedFileRecord>),
    ProcessFork(ProcessRecord),
    ProcessExec(ProcessRecord),
    ProcessExit(ProcessRecord),
    CgroupMade(Box<CgroupRecord>),
}

impl Record {
    pub fn header(&self) -> &RecordHeader {
        match self {
            Record::RegionMapped(r)
            | Record::RegionUnmapped(r)
            | Record::RegionProtected(r)
            | Record::UnmapUnresolved(r)
            | Record::ProtectUnresolved(r)
            | Record::RemapUnresolved(r)
            | Record::ExecImage(r) => &r.header,
            Record::WriteFault(f) => &f.header,
            Record::WriteFaultSnapshot(s) => &s.fault.header,
            Record::KernelWriteFault(f) => &f.fault.header,
            Record::WatchWrite(w) => &w.header,
            Record::RegionSynced(s) => &s.header,
            Record::PageDirtied(p) => &p.header,
            Record::MappedFile(f) => &f.header,
            Record::ProcessFork(p) | Record::ProcessExec(p) | Record::ProcessExit(p) => &p.header,
            Record::CgroupMade(c) => &c.header,
        }
    }
}

/// Why bytes from the ring buffer could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error(
        "a {kind} record needs {expected} bytes but {size} arrived; the agent and its eBPF object disagree, rebuild both"
    )]
    InvalidSize {
        kind: &'static str,
        size: usize,
        expected: usize,
    },
    #[error("unknown record kind {0}; the agent and its eBPF object disagree, rebuild both")]
    UnknownKind(u32),
}

/// Decodes one ring-buffer item.
pub fn decode(bytes: &[u8]) -> Result<Record, DecodeError> {
    let header: RecordHeader = read(bytes, "header")?;
    Ok(match header.kind {
        KIND_REGION_MAPPED => Record::RegionMapped(read(bytes, "region_mapped")?),
        KIND_REGION_UNMAPPED => Record::RegionUnmapped(read(bytes, "region_unmapped")?),
        KIND_REGION_PROTECTED => Record::RegionProtected(read(bytes, "region_protected")?),
        KIND_UNMAP_UNRESOLVED => Record::UnmapUnresolved(read(bytes, "unmap_unresolved")?),
        KIND_PROTECT_UNRESOLVED => Record::ProtectUnresolved(read(bytes, "protect_unresolved")?),
        KIND_REMAP_UNRESOLVED => Record::RemapUnresolved(read(bytes, "remap_unresolved")?),
        KIND_WRITE_FAULT => Record::WriteFault(Box::new(read_framed(
            bytes,
            "write_fault",
            FaultRecord::FIXED_BYTES,
            |r: &FaultRecord| FaultRecord::wire_len(r.stack_bytes),
        )?)),
        KIND_WRITE_FAULT_SNAPSHOT => {
            Record::WriteFaultSnapshot(Box::new(read(bytes, "write_fault_snapshot")?))
        }
        KIND_WATCH_WRITE => Record::WatchWrite(Box::new(read_framed(
            bytes,
            "watch_write",
            WatchRecord::FIXED_BYTES,
            |r: &WatchRecord| WatchRecord::wire_len(r.stack_bytes),
        )?)),
        KIND_REGION_SYNCED => Record::RegionSynced(Box::new(read_framed(
            bytes,
            "region_synced",
            SyncRecord::FIXED_BYTES,
            |r: &SyncRecord| SyncRecord::wire_len(r.stack_bytes),
        )?)),
        KIND_PAGE_DIRTIED => Record::PageDirtied(read(bytes, "page_dirtied")?),
        KIND_EXEC_IMAGE => Record::ExecImage(read(bytes, "exec_image")?),
        KIND_KERNEL_WRITE_FAULT => {
            Record::KernelWriteFault(Box::new(read(bytes, "kernel_write_fault")?))
        }
        KIND_MAPPED_FILE => Record::MappedFile(Box::new(read(bytes, "mapped_file")?)),
        KIND_PROCESS_FORK => Record::ProcessFork(read(bytes, "process_fork")?),
        KIND_PROCESS_EXEC => Record::ProcessExec(read(bytes, "process_exec")?),
        KIND_PROCESS_EXIT => Record::ProcessExit(read(bytes, "process_exit")?),
        KIND_CGROUP_MADE => Record::CgroupMade(Box::new(read(bytes, "cgroup_made")?)),
        other => return Err(DecodeError::UnknownKind(other)),
    })
}

/// A record with a stack carries only the frames its stack has (`wire_len`).
fn read_framed<T: aya::Pod>(
    bytes: &[u8],
    kind: &'static str,
    fixed_bytes: usize,
    wire_len: impl Fn(&T) -> usize,
) -> Result<T, DecodeError> {
    let invalid = |expected| DecodeError::InvalidSize {
        kind,
        size: bytes.len(),
        expected,
    };
    if bytes.len() < fixed_bytes {
        return Err(invalid(fixed_bytes));
    }
    let len = bytes.len().min(size_of::<T>());
    // SAFETY: all-zero is a valid `T` (Pod), and `len` bytes fit in both.
    let mut record: T = unsafe { std::mem::zeroed() };
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (&raw mut record).cast::<u8>(), len) };
    let expected = wire_len(&record);
    if bytes.len() != len || len < expected {
        return Err(invalid(expected));
    }
    Ok(record)
}

/// Copies a `T` out of the front of `bytes` after checking the length.
pub(crate) fn read<T: aya::Pod>(bytes: &[u8], kind: &'static str) -> Result<T, DecodeError> {
    let expected = size_of::<T>();
    if bytes.len() < expected {
        return Err(DecodeError::InvalidSize {
            kind,
            size: bytes.len(),
            expected,
        });
    }
    // SAFETY: length checked above; `T: Pod` accepts any bit pattern; unaligned read.
    Ok(unsafe { bytes.as_ptr().cast::<T>().read_unaligned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: aya::Pod>(value: &T) -> Vec<u8> {
        // SAFETY: Pod types have no padding (asserted in map-audit-common).
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    #[test]
    fn decodes_region_record() {
        let mut record = RegionRecord::default();
        record.header.kind = KIND_REGION_MAPPED;
        record.header.tgid = 42;
        record.region.start = 0x7f00_0000_0000;
        let Record::RegionMapped(decoded) = decode(&bytes_of(&record)).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(decoded.header.tgid, 42);
        assert_eq!(decoded.region.start, 0x7f00_0000_0000);
    }

    fn fault_with_frames(frames: &[u64]) -> FaultRecord {
        // SAFETY: all-zero is a valid FaultRecord.
        let mut record: FaultRecord = unsafe { std::mem::zeroed() };
        record.header.kind = KIND_WRITE_FAULT;
        record.stack[..frames.len()].copy_from_slice(frames);
        record.stack_bytes = 8 * frames.len() as i64;
        record
    }

    #[test]
    fn fault_records_carry_only_their_frames() {
        let record = fault_with_frames(&[0x1000, 0x2000, 0x3000]);
        let wire = &bytes_of(&record)[..FaultRecord::FIXED_BYTES + 24];
        let Record::WriteFault(decoded) = decode(wire).unwrap() else {
            panic!("wrong kind")
        };
        assert_eq!(decoded.stack_bytes, 24);
        assert_eq!(decoded.stack[..4], [0x1000, 0x2000, 0x3000, 0]);
    }

    #[test]
    fn truncated_records_are_errors() {
        let record = fault_with_frames(&[0x1000, 0x2000, 0x3000]);
        let bytes = bytes_of(&record);
        let short = &bytes[..FaultRecord::FIXED_BYTES + 16];
        assert_eq!(
            decode(short).unwrap_err(),
            DecodeError::InvalidSize {
                kind: "write_fault",
                size: short.len(),
                expected: FaultRecord::FIXED_BYTES + 24
            }
        );
        assert!(matches!(
            decode(&bytes[..FaultRecord::FIXED_BYTES - 8]),
            Err(DecodeError::InvalidSize {
                kind: "write_fault",
                ..
            })
        ));
        assert!(matches!(
            decode(&bytes[..10]),
            Err(DecodeError::InvalidSize { kind: "header", .. })
        ));
        assert!(matches!(decode(&[]), Err(DecodeError::InvalidSize { .. })));
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let header = RecordHeader {
            kind: 99,
            ..Default::default()
        };
        assert_eq!(
            decode(&bytes_of(&header)).unwrap_err(),
            DecodeError::UnknownKind(99)
        );
    }
}
