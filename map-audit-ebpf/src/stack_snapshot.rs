//! A fault whose stack walk reached code without a table yet (the agent builds a
//! file's table when its mapping's record arrives, and a program writes within a
//! millisecond of its exec): the record goes with the registers of the frame the walk
//! stopped at and a copy of the stack above it, and the agent finishes the walk once
//! it has read the records before this one (the mappings, whose tables it builds).
//! Never tallied: each such fault is a record, until the tables are in.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_RING_SIZE},
    helpers::generated::{bpf_probe_read_kernel, bpf_probe_read_user},
};
use map_audit_common::{
    PAGE_SIZE,
    counters::{FAULTS_LOST_RINGBUF_FULL, STACK_SNAPSHOTS},
    records::{FaultRecord, KIND_WRITE_FAULT_SNAPSHOT, SNAPSHOT_BYTES, SnapshotFaultRecord},
};

use crate::{counters::bump, maps::EVENTS, records, user_stack};

/// Whether a snapshot may go: while the ring buffer is less than 1/8 full. A burst
/// of faults before the tables are in (a process attached while the agent builds
/// them) would otherwise fill it with 9 KiB records; those faults are tallied with
/// the stack as far as the kernel got instead.
#[inline(always)]
pub fn room() -> bool {
    EVENTS.query(BPF_RB_AVAIL_DATA.into()) < EVENTS.query(BPF_RB_RING_SIZE.into()) / 8
}

/// Sends `record` (this CPU's fault record, filled) as a `SnapshotFaultRecord`.
#[inline(always)]
pub fn send(record: *mut FaultRecord) {
    let Some((pc, sp, bp, exact)) = user_stack::stopped_at() else {
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<SnapshotFaultRecord>(0) else {
        bump(FAULTS_LOST_RINGBUF_FULL);
        return;
    };
    let out = entry.as_mut_ptr();
    unsafe {
        // A helper copy: the record is larger than the 512-byte stack.
        bpf_probe_read_kernel(
            (&raw mut (*out).fault).cast(),
            size_of::<FaultRecord>() as u32,
            record.cast_const().cast(),
        );
        (*out).fault.header.kind = KIND_WRITE_FAULT_SNAPSHOT;
        (*out).pc = pc;
        (*out).sp = sp;
        (*out).bp = bp;
        (*out).exact = exact;
        let stack = (&raw mut (*out).stack).cast::<c_void>();
        // The stack's top may be nearer than the copy: then up to the end of the page
        // after sp's, then of sp's own.
        let to_page_end = PAGE_SIZE - (sp & (PAGE_SIZE - 1));
        let mut len = 0;
        for want in [SNAPSHOT_BYTES as u64, to_page_end + PAGE_SIZE, to_page_end] {
            // In 1..=SNAPSHOT_BYTES, which the verifier checks.
            let n = (((want - 1) as u32) & (SNAPSHOT_BYTES as u32 - 1)) + 1;
            if bpf_probe_read_user(stack, n, sp as *const c_void) == 0 {
                len = n;
                break;
            }
        }
        (*out).stack_len = len;
    }
    entry.submit(records::batched_wakeup_flags(
        size_of::<SnapshotFaultRecord>() as u64,
    ));
    bump(STACK_SNAPSHOTS);
}
