//! User stacks: the unwind tables the kernel's walk reads (`unwind`), and naming the
//! frames it sends (`symbolizer` with blazesym, `exec_image`, `rendered_stacks`), with
//! debug files found here (`debug_lookup`) or fetched (`debuginfod`, `debug_files`).

pub mod debug_files;
pub mod debug_lookup;
pub mod debuginfod;
pub mod exec_image;
pub(crate) mod rendered_stacks;
pub mod symbolizer;
pub(crate) mod unwind;
