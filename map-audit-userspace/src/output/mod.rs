//! What the agent prints and serves: the events (`events`, `region_names`,
//! `addresses`, `clock`), written as JSON lines or pretty text (`json_writer`,
//! `pretty_format`), and the Prometheus metrics (`metrics`, `metrics_server`).

pub mod addresses;
pub mod clock;
pub mod events;
pub mod json_writer;
pub mod metrics;
pub mod metrics_server;
pub mod pretty_format;
pub mod region_names;
