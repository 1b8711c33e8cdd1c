//! `syscalls:sys_enter_mmap` / `sys_exit_mmap`: adds the mappings of in-scope processes
//! to the region table. The address comes from the exit's return value (the entry's
//! `addr` is only a hint, 0 for most calls), matched to the entry by thread id.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use aya_log_ebpf::debug;
use map_audit_common::{
    PAGE_SIZE,
    records::ORIGIN_MMAP,
    region::{
        FileKey, MAP_ANONYMOUS, MAP_FIXED, PROT_EXEC, PendingCall, Region, change_applies,
        mapped_length,
    },
};

use crate::{
    id_sequence, mapped_file,
    maps::{agent_config, tracepoint_offsets},
    pending, records, region_filter, region_table, scope,
};

#[tracepoint]
pub fn sys_enter_mmap(ctx: TracePointContext) -> u32 {
    try_sys_enter_mmap(&ctx).unwrap_or(0)
}

fn try_sys_enter_mmap(ctx: &TracePointContext) -> Result<u32, i32> {
    if scope::get_or_adopt((bpf_get_current_pid_tgid() >> 32) as u32).is_none() {
        return Ok(0);
    }
    let off = tracepoint_offsets();
    let call = unsafe {
        PendingCall {
            addr: ctx.read_at(off.mmap_addr as usize)?,
            len: ctx.read_at(off.mmap_len as usize)?,
            file_offset: ctx.read_at(off.mmap_off as usize)?,
            new_len: 0,
            prot: ctx.read_at::<u64>(off.mmap_prot as usize)? as u32,
            flags: ctx.read_at::<u64>(off.mmap_flags as usize)? as u32,
            fd: ctx.read_at::<i64>(off.mmap_fd as usize)? as i32,
            _pad: 0,
            seq: 0,
            entered_ns: 0,
        }
    };
    pending::save(&call);
    Ok(0)
}

#[tracepoint]
pub fn sys_exit_mmap(ctx: TracePointContext) -> u32 {
    try_sys_exit_mmap(&ctx).unwrap_or(0)
}

fn try_sys_exit_mmap(ctx: &TracePointContext) -> Result<u32, i32> {
    // Failed calls change nothing.
    let Some((tgid, scope, call, start)) = pending::take_mapped(ctx)? else {
        return Ok(0);
    };
    // Held until the end: another thread's edit of this process must not interleave.
    let _lock = scope::lock_table(tgid);
    let end = start + mapped_length(call.len, call.flags);
    // A fixed mapping replaces whatever was there. Any other got a range the kernel
    // had free, so what the table still holds there is stale: another thread's munmap
    // freed it and has not reached its own exit yet.
    if call.flags & MAP_FIXED != 0
        || stale_at(tgid, scope.generation, start, call.seq)
        || stale_at(tgid, scope.generation, end - PAGE_SIZE, call.seq)
    {
        region_table::unmap_range(tgid, scope.generation, start, end, call.seq);
    }
    let region = Region {
        start,
        end,
        file_offset: call.file_offset,
        id: id_sequence::next_id(),
        prot: call.prot,
        flags: call.flags,
        generation: scope.generation,
        path_filter: region_filter::initial_path_state(call.flags),
        file: if call.flags & MAP_ANONYMOUS == 0 {
            mapped_file::key_of_fd(call.fd)
        } else {
            FileKey::default()
        },
    };
    region_table::insert(tgid, &region);
    // Paths for writable regions (reported) and executable ones (symbols, even after
    // the process is gone).
    if call.flags & MAP_ANONYMOUS == 0 && (region.is_writable() || region.prot & PROT_EXEC != 0) {
        mapped_file::send(call.fd, region.id);
    }
    records::region_mapped(&region, ORIGIN_MMAP);
    if agent_config().log_enabled != 0 {
        debug!(
            ctx,
            "tgid {} region {:x}-{:x} prot {:x} flags {:x} id {}",
            tgid,
            region.start,
            region.end,
            region.prot,
            region.flags,
            region.id
        );
    }
    Ok(0)
}

/// Whether the table holds, at `address`, a region older than the call.
#[inline(always)]
fn stale_at(tgid: u32, generation: u32, address: u64, seq: u64) -> bool {
    region_table::lookup_ref(tgid, generation, address).is_some_and(|r| change_applies(r, seq))
}
