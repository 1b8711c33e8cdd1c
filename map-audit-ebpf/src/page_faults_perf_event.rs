//! The perf software event `page-faults` (sample period 1) with a BPF perf_event
//! program: the hook of last resort, on any architecture and without tracepoints or
//! kprobes. A perf sample carries the fault address but no error code, so it cannot
//! tell a write from a read: faults in writable regions are reported with an unknown
//! error code (null), which can include reads of writable pages.

use aya_ebpf::{macros::perf_event, programs::PerfEventContext};
use map_audit_common::records::ERROR_CODE_UNKNOWN;

use crate::{counters::Nesting, user_stack::UserRegs, write_fault};

#[perf_event]
pub fn page_faults_perf_event(ctx: PerfEventContext) -> u32 {
    let data = unsafe { &*ctx.ctx };
    // A fault taken in kernel mode (the kernel writing for the process) has a kernel
    // instruction pointer, in the upper half of the address space.
    let kernel = data.regs.rip >> 63 != 0;
    // A user-mode fault carries the user registers: walk from them.
    let regs = (!kernel).then_some(UserRegs::Known {
        ip: data.regs.rip,
        sp: data.regs.rsp,
        bp: data.regs.rbp,
        exact: true,
    });
    write_fault::report(
        &ctx,
        data.addr,
        ERROR_CODE_UNKNOWN,
        kernel,
        regs,
        // Software events fire after the fault handler enables interrupts.
        Nesting::Preemptible,
    );
    0
}
