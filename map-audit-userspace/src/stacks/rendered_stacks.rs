//! User stacks symbolised and serialised once: later events with the same stack (same
//! addresses, same /proc snapshot and exec image) reuse the JSON text. In every-event
//! mode this replaces a symbol-cache lookup, frame copies and string escaping per frame.

use std::sync::Arc;

use foldhash::HashMap as FoldHashMap;
use serde_json::value::RawValue;

use crate::{output::events::Frame, proc::process_maps::ProcessMaps, stacks::exec_image::ImageMap};

/// A stack as the `stack` field of a `write_fault`.
pub struct RenderedStack {
    pub json: Arc<RawValue>,
    /// Frames without a symbol.
    pub unknown_frames: u64,
    /// Frames were cut to `--max-stack-depth`.
    pub cut: bool,
}

/// Rendered stacks before the cache starts over (bounds the agent's memory).
const CACHE_ENTRIES: usize = 16_384;

/// The snapshot and image are held by the cache, so their addresses cannot be reused
/// by other snapshots while a key refers to them.
struct Key {
    maps: Arc<ProcessMaps>,
    image: Arc<ImageMap>,
    addrs: Vec<u64>,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.maps, &other.maps)
            && Arc::ptr_eq(&self.image, &other.image)
            && self.addrs == other.addrs
    }
}

impl Eq for Key {}

impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.maps).hash(state);
        Arc::as_ptr(&self.image).hash(state);
        self.addrs.hash(state);
    }
}

#[derive(Default)]
pub struct RenderedStacks {
    cache: FoldHashMap<Key, Arc<RenderedStack>>,
}

impl RenderedStacks {
    /// Forgets every rendered stack (their names changed: a debug file arrived).
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    /// The rendered stack of `addrs`; `symbolize` gives its frames (at most `max_depth`
    /// are kept) and the count of unknown ones on a miss.
    pub fn get(
        &mut self,
        maps: &Arc<ProcessMaps>,
        image: &Arc<ImageMap>,
        addrs: &[u64],
        max_depth: usize,
        symbolize: impl FnOnce() -> (Vec<Frame>, u64),
    ) -> Arc<RenderedStack> {
        let key = Key {
            maps: maps.clone(),
            image: image.clone(),
            addrs: addrs.to_vec(),
        };
        if let Some(rendered) = self.cache.get(&key) {
            return rendered.clone();
        }
        let (mut frames, unknown_frames) = symbolize();
        let cut = frames.len() > max_depth;
        frames.truncate(max_depth);
        let json = serde_json::value::to_raw_value(&frames)
            .expect("frames are strings and numbers, always serialisable");
        let rendered = Arc::new(RenderedStack {
            json: Arc::from(json),
            unknown_frames,
            cut,
        });
        if self.cache.len() >= CACHE_ENTRIES {
            if let Some(metrics) = crate::output::metrics::get() {
                metrics.cache_evicted("rendered_stacks", self.cache.len() as u64);
            }
            self.cache.clear();
        }
        self.cache.insert(key, rendered.clone());
        rendered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(symbol: &str) -> Frame {
        Frame {
            symbol: Some(symbol.into()),
            offset: Some(0),
            ..Frame::at("0x1000".into())
        }
    }

    #[test]
    fn a_stack_is_symbolised_once_per_snapshot_and_cut_to_depth() {
        let mut stacks = RenderedStacks::default();
        let (maps, image) = (Arc::new(ProcessMaps::default()), Arc::default());
        let mut calls = 0;
        let mut get = |stacks: &mut RenderedStacks, maps: &Arc<ProcessMaps>| {
            stacks.get(maps, &image, &[1, 2, 3], 2, || {
                calls += 1;
                (vec![frame("a"), frame("b"), frame("c")], 1)
            })
        };
        let first = get(&mut stacks, &maps);
        let again = get(&mut stacks, &maps);
        // A new snapshot of the process may map other files: rendered afresh.
        let _ = get(&mut stacks, &Arc::new(ProcessMaps::default()));
        assert_eq!(calls, 2);
        assert!(Arc::ptr_eq(&first, &again));
        assert!(first.cut);
        assert_eq!(first.unknown_frames, 1);
        let json: Vec<serde_json::Value> = serde_json::from_str(first.json.get()).unwrap();
        let symbols: Vec<_> = json.iter().map(|f| f["symbol"].clone()).collect();
        assert_eq!(symbols, ["a", "b"]);
    }
}
