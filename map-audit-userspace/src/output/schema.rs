//! The JSON Schema of the event stream (`schema/map-audit-v1.schema.json`), generated
//! from the event types: their fields, the constraints in their `#[schemars]`
//! attributes and their doc comments. `tests/schema_file.rs` checks the committed file
//! is what this generates (`MAP_AUDIT_BLESS=1` rewrites it).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings, json_schema};
use serde_json::{Value, json};

use crate::{
    commands::go_maps::events as go,
    output::events::{
        AgentStarted, Mapped, Protected, RegionEvent, RegionSynced, RegionUnsynced, SCHEMA, Stats,
        Unmapped, WatchStarted, WriteFault, WriteWatch,
    },
};

/// Each event name, and the type of the fields it adds to the envelope.
fn event_kinds(generator: &mut SchemaGenerator) -> Vec<(&'static [&'static str], Schema)> {
    vec![
        (
            &["agent_started"],
            generator.subschema_for::<AgentStarted>(),
        ),
        (
            &["region_mapped"],
            generator.subschema_for::<RegionEvent<Mapped>>(),
        ),
        (
            &["region_unmapped"],
            generator.subschema_for::<RegionEvent<Unmapped>>(),
        ),
        (
            &["region_protected"],
            generator.subschema_for::<RegionEvent<Protected>>(),
        ),
        (&["write_fault"], generator.subschema_for::<WriteFault>()),
        (
            &["watch_started"],
            generator.subschema_for::<WatchStarted>(),
        ),
        (&["write_watch"], generator.subschema_for::<WriteWatch>()),
        (
            &["region_synced"],
            generator.subschema_for::<RegionSynced>(),
        ),
        (
            &["region_unsynced"],
            generator.subschema_for::<RegionUnsynced>(),
        ),
        (
            &["agent_stats", "agent_stopped"],
            generator.subschema_for::<Stats>(),
        ),
        (
            &["go_maps_started"],
            generator.subschema_for::<go::Started>(),
        ),
        (
            &["go_program_hooked"],
            generator.subschema_for::<go::ProgramHooked>(),
        ),
        (
            &["go_program_refused"],
            generator.subschema_for::<go::ProgramRefused>(),
        ),
        (
            &["go_map_concurrent_write"],
            generator.subschema_for::<go::ConcurrentWrite>(),
        ),
        (
            &["go_runtime_crash"],
            generator.subschema_for::<go::RuntimeCrash>(),
        ),
        (
            &["go_crash_thread"],
            generator.subschema_for::<go::CrashThread>(),
        ),
        (
            &["go_maps_stats", "go_maps_stopped"],
            generator.subschema_for::<go::Stats>(),
        ),
    ]
}

/// The schema, as committed.
pub fn generate() -> Value {
    let mut generator = SchemaSettings::draft2020_12()
        .for_serialize()
        .into_generator();
    let kinds = event_kinds(&mut generator);
    let names: Vec<&str> = kinds
        .iter()
        .flat_map(|(names, _)| names.iter().copied())
        .collect();
    let each_kind: Vec<Value> = kinds
        .into_iter()
        .map(|(names, fields)| {
            json!({
                "if": { "properties": { "event": { "enum": names } } },
                "then": fields,
            })
        })
        .collect();
    let timestamp = generator.subschema_for::<Timestamp>();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://map-audit.invalid/schema/map-audit-v1.schema.json",
        "title": format!("map-audit event, schema {SCHEMA}"),
        "description": "One JSON object per line: the envelope (schema, event, ts, host) and the event's own fields. Generated from the agent's event types (map-audit-userspace/src/output/schema.rs); do not edit. Fields are only ever added, never renamed. Addresses are lowercase hex strings because JSON numbers above 2^53 lose precision in most collectors.",
        "type": "object",
        "required": ["schema", "event", "ts", "host"],
        "properties": {
            "schema": { "const": SCHEMA },
            "event": { "enum": names },
            "ts": timestamp,
            "host": { "type": "string" },
        },
        "allOf": each_kind,
        "$defs": generator.take_definitions(true),
    })
}

/// A schema-only type for string fields with a pattern: `#[schemars(with = "Name")]`.
macro_rules! pattern_string {
    ($(#[doc = $doc:literal])* $name:ident, $description:literal, $pattern:literal) => {
        $(#[doc = $doc])*
        pub struct $name;

        impl JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({ "description": $description, "type": "string", "pattern": $pattern })
            }
        }
    };
}

pattern_string!(
    /// An address field (`events::hex`).
    Address,
    "An address or offset: lowercase hex, as a string.",
    "^0x[0-9a-f]+$"
);

pattern_string!(
    /// A time field (`clock::Clock`).
    Timestamp,
    "RFC 3339 UTC wall-clock time with nanoseconds.",
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{9}Z$"
);

pattern_string!(
    /// A protection field (`region_names::prot_string`).
    Prot,
    "Protection as in /proc/PID/maps: \"rw-\", \"r-x\", ...",
    "^[r-][w-][x-]$"
);
