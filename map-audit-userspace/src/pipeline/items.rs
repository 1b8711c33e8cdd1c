//! What goes through the correlator: the items the ring-buffer reader (and the /proc
//! seed) hand it, in ring-buffer order, and the events it gives back.

use std::sync::Arc;

use crate::{
    output::events::Body,
    pipeline::{records::Record, region_mirror::TrackedRegion},
    proc::process_maps::ProcessMaps,
};

/// What the reader hands to the pipeline, in ring-buffer order.
pub enum Item {
    Record(Record),
    /// A fresh /proc/PID/maps snapshot, sent before the records that need it.
    Maps(u32, Arc<ProcessMaps>),
    /// Where a mount id is mounted, read by the reader while the mapping process lived;
    /// sent before its file record.
    MountPoint(u32, Arc<str>),
    /// A process that ran before the agent started: its mappings, from /proc (already
    /// in the kernel's table, in scope generation `generation`).
    Seed {
        pid: u32,
        comm: String,
        generation: u32,
        regions: Vec<TrackedRegion>,
        /// False when the process kept changing its mappings while they were loaded.
        settled: bool,
    },
}

/// An event ready to be written, with the kernel time it happened at (`None`: now).
pub struct Timed {
    pub ts_ns: Option<u64>,
    pub body: Body,
}
