//! Stack unwinding without frame pointers: unwind tables built from each executable
//! file's DWARF CFI (`cfi_rows`), kept in the kernel's maps for the fault path
//! (`tables`), the first of them built before a command the agent starts runs
//! (`prebuild`), and the walks the kernel left to the agent finished on them (`finish`).

pub mod cfi_rows;
pub mod finish;
pub mod prebuild;
pub mod tables;
