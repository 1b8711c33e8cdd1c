//! The subcommands, one module each (`run`, `watch`, `check`, `report`, `go_maps`),
//! the command line they share (`cli`, `config_file`), and the read loop and signals
//! of those that audit (`read_loop`, `signals`).

pub mod check;
pub mod cli;
pub mod config_file;
pub mod go_maps;
pub(crate) mod read_loop;
pub mod report;
pub mod run;
pub(crate) mod signals;
pub mod watch;
