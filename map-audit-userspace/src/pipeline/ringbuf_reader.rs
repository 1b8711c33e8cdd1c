//! Reads the kernel's ring buffer: woken by epoll (AsyncFd) when the kernel forces a
//! wake-up, and on a short timer for records submitted without one. It also takes the
//! /proc snapshots records need, here rather than later in the pipeline, while the
//! process most likely still exists, and builds the unwind table of each newly mapped
//! executable file before passing its record on.

use std::sync::mpsc::SyncSender;

use aya::maps::{MapData, RingBuf};
use map_audit_common::region::PROT_EXEC;

use crate::{
    output::region_names::is_file_backed,
    pipeline::Message,
    pipeline::items::Item,
    pipeline::records::{self, Record},
    proc::mount_points::MountPoints,
    proc::process_maps::Snapshots,
    stacks::unwind::tables::SharedTables,
};

/// Items per message to the pipeline.
const BATCH: usize = 256;

/// Moves everything in the ring buffer to the pipeline. Returns false when the
/// pipeline has gone (it only stops on request, so this means it failed).
pub fn drain(
    ring: &mut RingBuf<MapData>,
    snapshots: &mut Snapshots,
    mounts: &mut MountPoints,
    unwind_tables: &SharedTables,
    pipeline: &SyncSender<Message>,
) -> bool {
    let mut batch: Vec<Item> = Vec::with_capacity(BATCH);
    let mut undecodable = 0;
    while let Some(bytes) = ring.next() {
        let record = match records::decode(&bytes) {
            Ok(record) => record,
            Err(err) => {
                undecodable += 1;
                log::warn!("{err}");
                continue;
            }
        };
        drop(bytes);
        // Its process's mappings came before it, and their tables are built.
        let record = match record {
            Record::WriteFaultSnapshot(snapshot) => {
                Record::WriteFault(Box::new(unwind_tables.lock().finish_stack(&snapshot)))
            }
            record => record,
        };
        let pid = record.header().tgid;
        if let Record::ProcessExit(_) | Record::ProcessExec(_) = record {
            snapshots.forget(pid);
        } else if let Record::ProcessFork(fork) = &record {
            if let Some(maps) = snapshots.inherit(fork.tgid, pid) {
                log::trace!(
                    "pid {} inherits the {} mappings of pid {pid}",
                    fork.tgid,
                    maps.entry_count()
                );
                batch.push(Item::Maps(fork.tgid, maps));
            }
        } else {
            // Resolved now, while the process (and its mount namespace) exists.
            if let Record::MappedFile(file) = &record
                && let Some(point) = mounts.get(pid, file.mount_id)
            {
                batch.push(Item::MountPoint(file.mount_id, point.into()));
            }
            // A new file mapping may be a new library or the region's own path.
            let refresh = matches!(&record, Record::RegionMapped(r) if is_file_backed(&r.region));
            let (maps, fresh) = snapshots.get(pid, refresh);
            // A library loaded with dlopen runs as soon as it is mapped: its table is
            // built now, not when the pipeline gets to the record.
            if let Record::RegionMapped(r) = &record
                && r.region.prot & PROT_EXEC != 0
            {
                let path = maps.path_at(r.region.start);
                unwind_tables.ensure_for_region(pid, &r.region, path.as_deref());
            }
            if fresh {
                log::trace!("pid {pid}: snapshot of {} mappings", maps.entry_count());
                batch.push(Item::Maps(pid, maps));
            }
        }
        batch.push(Item::Record(record));
        if batch.len() >= BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if pipeline.send(Message::Items(full)).is_err() {
                return false;
            }
        }
    }
    if undecodable > 0 && pipeline.send(Message::Undecodable(undecodable)).is_err() {
        return false;
    }
    batch.is_empty() || pipeline.send(Message::Items(batch)).is_ok()
}
