//! The committed JSON Schema (`schema/map-audit-v1.schema.json`) is the one generated
//! from the event types (`output::schema`): a field added to an event without the
//! schema fails here. `MAP_AUDIT_BLESS=1` rewrites the file.

use std::path::PathBuf;

use map_audit::output::schema;

#[test]
fn committed_schema_is_the_generated_one() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schema/map-audit-v1.schema.json");
    let generated = serde_json::to_string_pretty(&schema::generate()).unwrap() + "\n";
    if std::env::var_os("MAP_AUDIT_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == generated,
        "{} is not the schema the event types generate; run \
         `MAP_AUDIT_BLESS=1 cargo test -p map-audit --test schema_file` and commit it",
        path.display()
    );
}

#[test]
fn generated_schema_is_a_valid_draft_2020_12_schema() {
    let generated = schema::generate();
    jsonschema::draft202012::meta::validate(&generated)
        .unwrap_or_else(|err| panic!("the generated schema is not valid: {err}"));
}

/// A `region_mapped` line as the agent prints it.
fn region_mapped() -> serde_json::Value {
    serde_json::json!({
        "schema": "map-audit/v1", "event": "region_mapped",
        "ts": "2026-12-04T05:00:00.000000001Z", "host": "h",
        "pid": 7, "tid": 7, "comm": "w", "exe": "/usr/bin/w",
        "cgroup": {"id": 1, "path": "/"}, "container": null, "kubernetes": null,
        "region": {
            "wx": false, "id": 3, "start": "0x7f0000000000", "end": "0x7f0000001000",
            "prot": "rw-", "flags": ["shared"], "path": "/tmp/f", "offset": 0
        },
        "origin": "mmap"
    })
}

#[test]
fn generated_schema_states_each_events_own_requirements() {
    let validator = jsonschema::draft202012::new(&schema::generate()).unwrap();
    let line = region_mapped();
    assert!(validator.is_valid(&line), "{:?}", validator.validate(&line));

    let broken = |edit: &dyn Fn(&mut serde_json::Value), why: &str| {
        let mut copy = region_mapped();
        edit(&mut copy);
        assert!(!validator.is_valid(&copy), "accepted {why}: {copy}");
    };
    broken(
        &|l| drop(l.as_object_mut().unwrap().remove("origin")),
        "a region_mapped without origin",
    );
    broken(&|l| l["origin"] = "mmap2".into(), "an unknown origin");
    broken(
        &|l| l["region"]["flags"] = serde_json::json!([]),
        "a region without flags",
    );
    broken(
        &|l| l["region"]["start"] = "140000".into(),
        "a decimal address",
    );
    broken(
        &|l| l["event"] = "region_mapped2".into(),
        "an unknown event",
    );
    broken(
        &|l| l["ts"] = "2026-12-04T05:00:00Z".into(),
        "a timestamp without nanoseconds",
    );

    broken(
        &|l| l["event"] = "region_unmapped".into(),
        "a region_unmapped without range",
    );
}
