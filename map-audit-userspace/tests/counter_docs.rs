//! The docs' counter tables are derived from the counter catalogues
//! (`map_audit_common::counters`, `go_maps::counters`): a counter added or changed
//! without its docs fails here. `MAP_AUDIT_BLESS=1` rewrites the tables.

use std::path::PathBuf;

use map_audit_common::{
    counter_catalogue::{CounterKind, CounterSet},
    counters::{AgentCounters, KernelCounters},
    go_maps::counters::{GoAgentCounters, GoKernelCounters},
};

const BEGIN: &str = "<!-- counters: generated from the catalogues by tests/counter_docs.rs -->\n";
const END: &str = "<!-- end of counters -->\n";

/// One markdown row per counter of `S`.
fn rows<S: CounterSet>(side: &str) -> String {
    S::CATALOGUE
        .iter()
        .map(|info| {
            let loss = match info.kind {
                CounterKind::Loss => "loss",
                CounterKind::Count => "",
            };
            let doc = info.doc.split_whitespace().collect::<Vec<_>>().join(" ");
            format!("| `{side}.{}` | {loss} | {doc} |\n", info.name)
        })
        .collect()
}

fn table(rows: &[String]) -> String {
    format!(
        "{BEGIN}| counter | kind | meaning |\n|---|---|---|\n{}{END}",
        rows.concat()
    )
}

/// Checks (or with `MAP_AUDIT_BLESS=1` rewrites) the generated table in `doc`.
fn check(doc: &str, expected: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(doc);
    let text = std::fs::read_to_string(&path).unwrap();
    let (Some(begin), Some(end)) = (text.find(BEGIN), text.find(END)) else {
        panic!("docs/{doc} has no generated counter table (markers {BEGIN:?} .. {END:?})");
    };
    let current = &text[begin..end + END.len()];
    if current == expected {
        return;
    }
    if std::env::var_os("MAP_AUDIT_BLESS").is_some() {
        let updated = format!("{}{expected}{}", &text[..begin], &text[end + END.len()..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    panic!(
        "docs/{doc}'s counter table differs from the catalogues; \
         run `MAP_AUDIT_BLESS=1 cargo test -p map-audit --test counter_docs`:\n{expected}"
    );
}

#[test]
fn events_md_lists_every_counter_of_the_catalogues() {
    let expected = table(&[
        rows::<KernelCounters>("kernel"),
        rows::<AgentCounters>("agent"),
    ]);
    check("events.md", &expected);
}

#[test]
fn go_maps_md_lists_every_go_counter_of_the_catalogues() {
    let expected = table(&[
        rows::<GoKernelCounters>("kernel"),
        rows::<GoAgentCounters>("agent"),
    ]);
    check("go-maps.md", &expected);
}

#[test]
fn counter_names_are_unique_within_a_set() {
    fn unique<S: CounterSet>() {
        let mut names: Vec<_> = S::CATALOGUE.iter().map(|info| info.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
    unique::<KernelCounters>();
    unique::<AgentCounters>();
    unique::<GoKernelCounters>();
    unique::<GoAgentCounters>();
}
