//! The subcommands, one module each (`run`, `check`, `report`, `go_maps`), and the
//! command line they share (`cli`, `config_file`).

pub mod check;
pub mod cli;
pub mod config_file;
pub mod go_maps;
pub mod report;
pub mod run;
pub(crate) mod signals;
pub mod watch;
