//! Types shared by the map-audit eBPF programs and the agent.
//!
//! Everything here crosses the kernel/user boundary as raw bytes, so every type is
//! `#[repr(C)]`, made only of fixed-width integers, with explicit padding and a size
//! assertion: reading bytes into a type with implicit padding, `bool` or enums is UB.
#![no_std]

pub mod blocks;
pub mod config;
pub mod counter_catalogue;
pub mod counters;
pub mod go_maps;
pub mod map_names;
pub mod records;
pub mod region;
pub mod region_filter;
pub mod region_split;
pub mod tally;
pub mod unwind;

/// Page size the region table is built on. Regions are page-aligned by the kernel;
/// arm64 with 16/64 KiB pages still aligns to 4 KiB, so this is the safe granule.
pub const PAGE_SIZE: u64 = 4096;

/// Frames of user stack captured per write fault. Deep enough for real services while
/// keeping a record under 1 KiB and a JSON line under the 16 KiB collector limit.
pub const MAX_STACK_DEPTH: usize = 64;

/// Frames the object for kernels before 5.17 walks at most: its verifier checks each
/// step of the walk anew (see `map-audit-ebpf/src/loops.rs`).
pub const MAX_STACK_DEPTH_5_10: usize = 32;

/// Length of a task's `comm`, including the NUL terminator.
pub const COMM_LEN: usize = 16;
