//! The kernel's BTF (/sys/kernel/btf/vmlinux), which the agent parses itself for struct
//! member offsets: any bytes give offsets or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_audit::kernel::kernel_btf::KernelBtf;

fuzz_target!(|bytes: &[u8]| {
    if let Ok(btf) = KernelBtf::parse(bytes) {
        let _ = btf.member_offset("task_struct", "tgid");
        let _ = btf.member_offset("dentry", "d_name");
    }
});
