//! What /proc says: process maps (`process_maps`, `proc_seed` loads them into the
//! kernel's table at start), cgroup paths (`cgroup_paths`), mount points, the files of processes in other mount namespaces
//! (`module_files`), and the command the agent starts
//! (`target`), and data symbols by name for `watch` (`data_symbols`).

pub(crate) mod cgroup_paths;
pub(crate) mod data_symbols;
pub mod module_files;
pub(crate) mod mount_points;
pub mod process_maps;
pub(crate) mod soft_dirty;
pub(crate) mod target;
pub(crate) mod vdso_image;
