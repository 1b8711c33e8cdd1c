//! Reads the kernel's ring buffer: woken by epoll (AsyncFd) when the kernel forces a
//! wake-up, and on a short timer for records submitted without one.

use std::sync::mpsc::SyncSender;

use aya::maps::{MapData, RingBuf};

use crate::{
    pipeline::Message,
    records::{self, Record},
};

/// Records per message to the pipeline.
const BATCH: usize = 1024;

/// Moves everything in the ring buffer to the pipeline. Returns false when the
/// pipeline has gone (it only stops on request, so this means it failed).
pub fn drain(ring: &mut RingBuf<MapData>, pipeline: &SyncSender<Message>) -> bool {
    let mut batch: Vec<Record> = Vec::with_capacity(BATCH);
    let mut undecodable = 0;
    while let Some(item) = ring.next() {
        match records::decode(&item) {
            Ok(record) => batch.push(record),
            Err(err) => {
                undecodable += 1;
                log::warn!("{err}");
            }
        }
        if batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if pipeline.send(Message::Records(full)).is_err() {
                return false;
            }
        }
    }
    if undecodable > 0 && pipeline.send(Message::Undecodable(undecodable)).is_err() {
        return false;
    }
    batch.is_empty() || pipeline.send(Message::Records(batch)).is_ok()
}
