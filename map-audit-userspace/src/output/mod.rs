//! What the agent prints and serves: the events (`events`, `region_names`, `containers`
//! with names from the runtimes' APIs in `container_api` and `containerd_api`,
//! `addresses`, `clock`; their JSON Schema, `schema`), written as JSON lines or pretty text (`json_writer`,
//! `pretty_format`), and the Prometheus metrics (`metrics`, `metrics_server`).

pub(crate) mod addresses;
pub mod clock;
pub(crate) mod container_api;
pub(crate) mod containerd_api;
pub(crate) mod containers;
pub(crate) mod events;
pub mod json_writer;
pub(crate) mod metrics;
pub(crate) mod metrics_server;
pub(crate) mod pretty_format;
pub(crate) mod region_names;
pub mod schema;
