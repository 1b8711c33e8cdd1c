//! map-audit's kernel side. Data flow:
//! `sys_mmap`, `sys_munmap`, `sys_mprotect`, `sys_mremap` keep `region_table` in sync
//! for processes in `scope` (`sched_process` adds forked children and reports execs and
//! exits); `page_fault_user` and `page_fault_kernel` look each write fault up in the
//! table (`write_fault`) and send matches through `maps::EVENTS` (`records`).
//! `map-audit watch` adds `watch_write`, on hardware watchpoints, over the same scope.
//! Go mode (`map-audit go-maps`) is separate: uprobes on the Go runtime's map writes
//! (`go_map_write`, `go_runtime_crash`) over the tables in `go_writers`; with
//! `--all-go`, `go_process_exec` reports execs.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
// Inline BPF assembly: the 5.12+ atomics (the older kernels' object has none).
#![cfg_attr(not(feature = "kernel-5-10"), feature(asm_experimental_arch))]
#![allow(internal_features)]
// Map keys and values go to the helpers by reference: by value, LLVM copies them onto
// the 512-byte BPF stack first (go_map_write_entry no longer fit when clippy was obeyed).
#![allow(clippy::needless_borrows_for_generic_args)]

mod cgroup_mkdir;
mod counters;
mod exec_mappings;
mod fault_tally;
mod go_map_write;
mod go_process_exec;
mod go_runtime_crash;
mod go_writers;
mod handle_mm_fault;
mod handle_mm_fault_fentry;
mod id_sequence;
mod loops;
mod mapped_file;
mod maps;
mod page_fault_btf;
mod page_fault_kernel;
mod page_fault_tracepoint;
mod page_fault_user;
mod page_faults_perf_event;
mod pending;
mod rate_limit;
mod records;
mod region_cache;
mod region_filter;
mod region_table;
mod sched_process;
mod scope;
mod stack_memo;
mod stack_snapshot;
mod sys_brk;
mod sys_mmap;
mod sys_mprotect;
mod sys_mremap;
mod sys_msync;
mod sys_munmap;
mod task_regs;
mod tick_clock;
mod user_stack;
mod watch_write;
mod write_fault;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
