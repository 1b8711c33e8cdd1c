//! The current task's user registers, as saved when it entered the kernel (the system
//! call or fault it is in): where a walk of its user stack starts when the hook's own
//! registers are the kernel's.

use aya_ebpf::bindings::pt_regs;

/// The saved user registers of the current task.
#[cfg(not(feature = "kernel-5-10"))]
#[inline(always)]
pub fn current_user_regs() -> *const pt_regs {
    use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};
    unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs }
}

/// Before 5.15 there is no `bpf_task_pt_regs`: x86-64 keeps them at the top of the
/// task's kernel stack (`task_pt_regs`), which is `THREAD_SIZE` bytes from
/// `task_struct.stack` (16 KiB: Debian's and Ubuntu's kernels have no KASAN, which
/// doubles it). A wrong guess reads garbage, which the walk ends on as unreadable.
#[cfg(feature = "kernel-5-10")]
#[inline(always)]
pub fn current_user_regs() -> *const pt_regs {
    use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
    const THREAD_SIZE: u64 = 16 << 10;
    let task = unsafe { bpf_get_current_task() };
    let offset = u64::from(crate::maps::kernel_offsets().task_stack);
    match unsafe { bpf_probe_read_kernel((task + offset) as *const u64) } {
        Ok(stack) => {
            (stack + THREAD_SIZE - core::mem::size_of::<pt_regs>() as u64) as *const pt_regs
        }
        Err(_) => core::ptr::null(),
    }
}
