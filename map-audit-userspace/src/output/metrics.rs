//! `--metrics-addr`: the agent's health in Prometheus text format (prometheus-client):
//! events by kind, losses by cause, every kernel and agent counter, table fill levels,
//! the hooks in use, the ring buffer's high-water mark, and symbolisation latency.
//! Process-wide (like a default registry): the JSON writer, the symboliser and the read
//! loop update it without plumbing, and only when it was enabled.

use std::sync::{
    OnceLock,
    atomic::{AtomicI64, AtomicU64},
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

use map_audit_common::counter_catalogue::{CounterKind, CounterSet};

use crate::{
    kernel::programs::AttachedHook, output::events::Counters, stacks::debuginfod::AnswerSource,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Name {
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Event {
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cause {
    cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Table {
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Cache {
    cache: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Hook {
    role: String,
    hook: String,
}

pub struct Metrics {
    registry: Registry,
    events: Family<Event, Counter>,
    kernel: Family<Name, Counter>,
    agent: Family<Name, Counter>,
    losses: Family<Cause, Counter>,
    table_entries: Family<Table, Gauge>,
    table_capacity: Family<Table, Gauge>,
    hooks: Family<Hook, Gauge>,
    evictions: Family<Cache, Counter>,
    ringbuf_capacity: Gauge<u64, AtomicU64>,
    ringbuf_high_water: Gauge<u64, AtomicU64>,
    symbolization: Histogram,
    debuginfod: Family<Answer, Histogram>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Answer {
    source: String,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The metrics, when `--metrics-addr` enabled them.
pub fn get() -> Option<&'static Metrics> {
    METRICS.get()
}

/// Enables the metrics for this process.
pub fn enable() -> &'static Metrics {
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        let mut metrics = Self {
            registry: Registry::with_prefix("map_audit"),
            events: Family::default(),
            kernel: Family::default(),
            agent: Family::default(),
            losses: Family::default(),
            table_entries: Family::default(),
            table_capacity: Family::default(),
            hooks: Family::default(),
            evictions: Family::default(),
            ringbuf_capacity: Gauge::default(),
            ringbuf_high_water: Gauge::default(),
            symbolization: Histogram::new(exponential_buckets(1e-6, 4.0, 10)),
            debuginfod: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1e-4, 4.0, 10))
            }),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "events",
            "JSON events written, by kind",
            metrics.events.clone(),
        );
        registry.register(
            "kernel_counter",
            "The kernel's counters (agent_stats.counters.kernel), as of the last agent_stats",
            metrics.kernel.clone(),
        );
        registry.register(
            "agent_counter",
            "The agent's counters (agent_stats.counters.agent), as of the last agent_stats",
            metrics.agent.clone(),
        );
        registry.register(
            "losses",
            "Everything lost, by cause (a subset of the counters above)",
            metrics.losses.clone(),
        );
        registry.register(
            "table_entries",
            "Entries in the kernel's tables",
            metrics.table_entries.clone(),
        );
        registry.register(
            "table_capacity",
            "Capacity of the kernel's tables",
            metrics.table_capacity.clone(),
        );
        registry.register(
            "hook",
            "The attached hooks (value 1), by role",
            metrics.hooks.clone(),
        );
        registry.register(
            "cache_evictions",
            "Entries the agent's bounded caches dropped when full (symbols, rendered stacks): later lookups redo the work",
            metrics.evictions.clone(),
        );
        registry.register(
            "ringbuf_capacity_bytes",
            "Ring buffer size",
            metrics.ringbuf_capacity.clone(),
        );
        registry.register(
            "ringbuf_high_water_bytes",
            "Most data waiting in the ring buffer seen by the kernel since the last agent_stats",
            metrics.ringbuf_high_water.clone(),
        );
        registry.register(
            "symbolization_seconds",
            "Time to symbolise one user stack",
            metrics.symbolization.clone(),
        );
        registry.register(
            "debuginfod_request_seconds",
            "Time to answer one debug-file request, by who answered (cache, server, backing_off); the debuginfod counters of agent_stats count them and their bytes",
            metrics.debuginfod.clone(),
        );
        metrics
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    pub fn event_written(&self, event: &str) {
        self.events
            .get_or_create(&Event {
                event: event.into(),
            })
            .inc();
    }

    pub fn hooks_attached(&self, hooks: &[AttachedHook]) {
        for hook in hooks {
            let labels = Hook {
                role: hook.role.into(),
                hook: hook.hook.clone(),
            };
            self.hooks.get_or_create(&labels).set(1);
        }
    }

    pub fn table_capacity(&self, table: &str, entries: u64) {
        set_gauge(&self.table_capacity, table, entries);
    }

    pub fn ringbuf(&self, capacity: u64, high_water: u64) {
        self.ringbuf_capacity.set(capacity);
        self.ringbuf_high_water.set(high_water);
    }

    pub fn ringbuf_high_water(&self, bytes: u64) {
        self.ringbuf_high_water.set(bytes);
    }

    pub fn cache_evicted(&self, cache: &str, entries: u64) {
        self.evictions
            .get_or_create(&Cache {
                cache: cache.into(),
            })
            .inc_by(entries);
    }

    pub fn symbolized(&self, seconds: f64) {
        self.symbolization.observe(seconds);
    }

    pub fn debuginfod_answered(&self, seconds: f64, source: AnswerSource) {
        let source = match source {
            AnswerSource::Cache => "cache",
            AnswerSource::Server => "server",
            AnswerSource::BackingOff => "backing_off",
        };
        self.debuginfod
            .get_or_create(&Answer {
                source: source.into(),
            })
            .observe(seconds);
    }

    /// Takes the counters of an `agent_stats` (so a scrape matches the last one).
    pub fn counters(&self, counters: &Counters) {
        self.counter_set(&self.kernel, &counters.kernel);
        self.counter_set(&self.agent, &counters.agent);
        let value = serde_json::to_value(counters.table_entries).expect("table entries serialise");
        if let Some(tables) = value.as_object() {
            for (table, entries) in tables {
                set_gauge(&self.table_entries, table, entries.as_u64().unwrap_or(0));
            }
        }
    }

    /// One set's counters into `family`, and its losses (by the catalogue) into `losses`.
    fn counter_set(&self, family: &Family<Name, Counter>, set: &impl CounterSet) {
        set.for_each(|info, value| {
            let name = info.name.to_string();
            advance(&family.get_or_create(&Name { name: name.clone() }), value);
            if info.kind == CounterKind::Loss {
                advance(&self.losses.get_or_create(&Cause { cause: name }), value);
            }
        });
    }
}

/// Counters only go up: moves `counter` to `total` (a snapshot of a monotonic count).
fn advance(counter: &Counter, total: u64) {
    counter.inc_by(total.saturating_sub(counter.get()));
}

fn set_gauge(family: &Family<Table, Gauge<i64, AtomicI64>>, table: &str, value: u64) {
    family
        .get_or_create(&Table {
            table: table.into(),
        })
        .set(i64::try_from(value).unwrap_or(i64::MAX));
}
