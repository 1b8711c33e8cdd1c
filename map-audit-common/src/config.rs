//! Start-up configuration the agent writes into the eBPF object's read-only globals.

/// Byte offsets of the syscall tracepoint fields the programs read. They are read from
/// the tracepoints' `format` files at start-up, never hard-coded: distributions have
/// moved them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    pub mmap_addr: u32,
    pub mmap_len: u32,
    pub mmap_prot: u32,
    pub mmap_flags: u32,
    pub mmap_off: u32,
    pub munmap_addr: u32,
    pub munmap_len: u32,
    /// `ret` of `sys_exit_*` (the same record layout for every syscall).
    pub exit_ret: u32,
    pub fork_child_pid: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<TracepointOffsets>() == 40);

/// Scope and behaviour switches.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// Non-zero when `--comm` filters were given (checked on mmap of unknown processes).
    pub match_comm: u32,
    /// Non-zero to emit aya-log diagnostics from the kernel.
    pub log_enabled: u32,
}
const _: () = assert!(core::mem::size_of::<AgentConfig>() == 8);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `repr(C)` integers with no padding (sizes asserted above).
    unsafe impl aya::Pod for super::TracepointOffsets {}
    unsafe impl aya::Pod for super::AgentConfig {}
}
