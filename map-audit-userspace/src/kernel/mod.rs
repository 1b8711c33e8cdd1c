//! The kernel side, from user space: loading the eBPF object and choosing its hooks
//! (`loader`, `fault_hooks`, with `kernel_btf`, `tracefs`, `kernel_support`,
//! `feature_probes`, `cgroup`),
//! the agent's edits of the kernel's tables (`region_table`, `kernel_tallies`,
//! `scope_cgroups`), and
//! `watch`'s hardware watchpoints (`watchpoints`).

pub(crate) mod cgroup;
pub(crate) mod counters;
pub(crate) mod fault_hooks;
pub mod feature_probes;
pub mod kernel_btf;
pub mod kernel_support;
pub(crate) mod kernel_tallies;
pub(crate) mod loader;
pub(crate) mod programs;
pub mod region_table;
pub(crate) mod scope_cgroups;
pub mod table_maps;
pub mod tracefs;
pub(crate) mod watchpoints;
