//! Checked decoding of Go mode's ring-buffer records: size first, then every count
//! inside (stack bytes, message length) against its buffer.

use map_audit_common::{
    MAX_STACK_DEPTH,
    go_maps::{
        CRASH_MESSAGE_LEN, GoCrashRecord, GoRaceRecord, GoWriter, KIND_GO_CRASH, KIND_GO_EXEC,
        KIND_GO_MAP_RACE,
    },
    records::RecordHeader,
};

use crate::pipeline::records::{DecodeError, read};

pub enum GoRecord {
    Race(Box<GoRaceRecord>),
    Crash(Box<GoCrashRecord>),
    /// `--all-go`: a process exec'd.
    Exec(RecordHeader),
}

pub fn decode(bytes: &[u8]) -> Result<GoRecord, DecodeError> {
    let kind = match bytes.get(..4) {
        Some(kind) => u32::from_le_bytes(kind.try_into().expect("4 bytes")),
        None => {
            return Err(DecodeError::InvalidSize {
                kind: "go",
                size: bytes.len(),
                expected: 4,
            });
        }
    };
    match kind {
        KIND_GO_MAP_RACE => {
            let record: GoRaceRecord = read(bytes, "go_map_race")?;
            check_stack(&record.holder, "go_map_race")?;
            check_stack(&record.current, "go_map_race")?;
            Ok(GoRecord::Race(Box::new(record)))
        }
        KIND_GO_CRASH => {
            let record: GoCrashRecord = read(bytes, "go_crash")?;
            check_stack(&record.writer, "go_crash")?;
            if record.message_len as usize > CRASH_MESSAGE_LEN {
                return Err(DecodeError::InvalidSize {
                    kind: "go_crash message",
                    size: record.message_len as usize,
                    expected: CRASH_MESSAGE_LEN,
                });
            }
            Ok(GoRecord::Crash(Box::new(record)))
        }
        KIND_GO_EXEC => Ok(GoRecord::Exec(read(bytes, "go_exec")?)),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// A negative `stack_bytes` is an errno (no frames); otherwise whole frames that fit.
fn check_stack(writer: &GoWriter, kind: &'static str) -> Result<(), DecodeError> {
    let bytes = writer.stack_bytes;
    if bytes < 0 || (bytes % 8 == 0 && bytes as usize <= 8 * MAX_STACK_DEPTH) {
        return Ok(());
    }
    Err(DecodeError::InvalidSize {
        kind,
        size: bytes as usize,
        expected: 8 * MAX_STACK_DEPTH,
    })
}

/// The frames a writer's stack holds, innermost first.
pub fn frames(writer: &GoWriter) -> &[u64] {
    let depth = (writer.stack_bytes.max(0) as usize / 8).min(MAX_STACK_DEPTH);
    &writer.stack[..depth]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: aya::Pod>(value: &T) -> Vec<u8> {
        // SAFETY: Pod types have no padding (asserted in map-audit-common).
        unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn race() -> GoRaceRecord {
        let mut record = GoRaceRecord {
            header: Default::default(),
            map: 0xc000010000,
            holder: GoWriter::zeroed(),
            current: GoWriter::zeroed(),
        };
        record.header.kind = KIND_GO_MAP_RACE;
        record.holder.stack_bytes = 16;
        record.current.stack_bytes = -14;
        record
    }

    #[test]
    fn decodes_a_race_and_its_frames() {
        let GoRecord::Race(record) = decode(&bytes_of(&race())).unwrap() else {
            panic!("not a race");
        };
        assert_eq!(record.map, 0xc000010000);
        assert_eq!(frames(&record.holder).len(), 2);
        assert!(frames(&record.current).is_empty());
    }

    #[test]
    fn refuses_short_records_and_impossible_counts() {
        let bytes = bytes_of(&race());
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&bytes[..2]).is_err());
        let mut bad = race();
        bad.current.stack_bytes = 8 * MAX_STACK_DEPTH as i64 + 8;
        assert!(decode(&bytes_of(&bad)).is_err());
        bad.current.stack_bytes = 12;
        assert!(decode(&bytes_of(&bad)).is_err());
        let mut unknown = race();
        unknown.header.kind = 99;
        assert!(matches!(
            decode(&bytes_of(&unknown)),
            Err(DecodeError::UnknownKind(99))
        ));
    }
}
