//! `cgroup:cgroup_mkdir` (attached only with `--container`): tells the agent of every
//! cgroup made, so a container started after the agent joins the scope. The agent
//! parses the path and, for a scoped container, adds the id to `SCOPE_CGROUPS` before
//! the runtime has started the container's first process (typically: the runtime sets
//! the cgroup up first).

use aya_ebpf::{
    EbpfContext, bindings::BPF_RB_FORCE_WAKEUP, helpers::generated as raw, macros::tracepoint,
    programs::TracePointContext,
};
use map_audit_common::{
    counters::{CGROUP_RECORDS, CGROUP_RECORDS_LOST_RINGBUF_FULL},
    records::{CGROUP_PATH_LEN, CgroupRecord, KIND_CGROUP_MADE},
};

use crate::{
    counters::bump,
    maps::{EVENTS, tracepoint_offsets},
    records::header,
};

#[tracepoint]
pub fn cgroup_mkdir(ctx: TracePointContext) -> u32 {
    let off = tracepoint_offsets();
    let read = |offset: u32| unsafe { ctx.read_at::<u32>(offset as usize) };
    let (Ok(hierarchy), Ok(level), Ok(path_loc)) = (
        read(off.cgroup_mkdir_root),
        read(off.cgroup_mkdir_level),
        read(off.cgroup_mkdir_path),
    ) else {
        return 0;
    };
    let Ok(id) = (unsafe { ctx.read_at::<u64>(off.cgroup_mkdir_id as usize) }) else {
        return 0;
    };
    bump(CGROUP_RECORDS);
    let Some(mut entry) = EVENTS.reserve::<CgroupRecord>(0) else {
        bump(CGROUP_RECORDS_LOST_RINGBUF_FULL);
        return 0;
    };
    let record = unsafe { &mut *entry.as_mut_ptr() };
    record.header = header(KIND_CGROUP_MADE);
    record.id = id;
    record.level = level;
    record.hierarchy = hierarchy;
    // `__data_loc`: the low 16 bits are the string's offset in the record.
    let path = unsafe { ctx.as_ptr().cast::<u8>().add((path_loc & 0xffff) as usize) };
    let copied = unsafe {
        raw::bpf_probe_read_kernel_str(
            record.path.as_mut_ptr().cast(),
            CGROUP_PATH_LEN as u32,
            path.cast(),
        )
    };
    if copied < 0 {
        record.path[0] = 0;
    }
    entry.submit(BPF_RB_FORCE_WAKEUP.into());
    0
}
