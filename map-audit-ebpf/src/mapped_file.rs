//! The path of the file behind a file-backed mmap, read at syscall exit by following
//! task->files->fdt->fd[fd]->f_path with offsets the agent took from the kernel's BTF:
//! dentry names up to the mount root, plus the mount id. Taken here because the agent
//! cannot rely on /proc: the mapping (or the process) may be gone when it looks.

use aya_ebpf::{
    bindings::BPF_RB_FORCE_WAKEUP,
    helpers::{bpf_get_current_task, bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes},
};
use map_audit_common::{
    config::KernelOffsets,
    counters::{FILE_RECORDS, FILE_RECORDS_LOST_RINGBUF_FULL},
    records::{KIND_MAPPED_FILE, MAX_PATH_COMPONENTS, MappedFileRecord, PATH_COMPONENT_LEN},
    region::FileKey,
};

use crate::{
    counters::bump,
    maps::{EVENTS, kernel_offsets},
    records,
};

/// Sends the path of `fd`'s file for region `region_id` (before its `region_mapped`).
#[inline(always)]
pub fn send(fd: i32, region_id: u64) {
    send_file(region_id, |_| unsafe { fd_file(fd) });
}

/// Sends the path of `file` (a `struct file *`) for region `region_id`.
#[inline(always)]
pub fn send_file_at(file: u64, region_id: u64) {
    send_file(region_id, |_| Ok(file));
}

/// Sends the path of the current process's executable (`mm->exe_file`) for the
/// exec image `image_id`.
#[inline(always)]
pub fn send_exe(image_id: u64) {
    send_file(image_id, |off| unsafe {
        let mm = read_u64(bpf_get_current_task() + u64::from(off.task_mm))?;
        read_u64(mm + u64::from(off.mm_exe_file))
    });
}

/// The key (device, inode) of the current task's `fd`'s file; zero when unreadable.
#[inline(always)]
pub fn key_of_fd(fd: i32) -> FileKey {
    unsafe { fd_file(fd) }.map(key_of).unwrap_or_default()
}

/// The key (device, inode) of `file` (a `struct file *`); zero when unreadable.
#[inline(always)]
pub fn key_of(file: u64) -> FileKey {
    let off = kernel_offsets();
    let read = || -> Result<FileKey, i32> {
        unsafe {
            let inode = read_u64(file + u64::from(off.file_inode))?;
            let sb = read_u64(inode + u64::from(off.inode_sb))?;
            Ok(FileKey {
                dev: bpf_probe_read_kernel((sb + u64::from(off.sb_dev)) as *const u32)?,
                _pad: 0,
                inode: read_u64(inode + u64::from(off.inode_ino))?,
            })
        }
    };
    if file == 0 {
        return FileKey::default();
    }
    read().unwrap_or_default()
}

/// Reads `[start_code, end_code)` of the current process.
#[inline(always)]
pub fn code_range() -> Result<(u64, u64), i32> {
    let off = kernel_offsets();
    unsafe {
        let mm = read_u64(bpf_get_current_task() + u64::from(off.task_mm))?;
        Ok((
            read_u64(mm + u64::from(off.mm_start_code))?,
            read_u64(mm + u64::from(off.mm_end_code))?,
        ))
    }
}

#[inline(always)]
fn send_file(region_id: u64, file: impl FnOnce(&KernelOffsets) -> Result<u64, i32>) {
    bump(FILE_RECORDS);
    let Some(mut entry) = EVENTS.reserve::<MappedFileRecord>(0) else {
        bump(FILE_RECORDS_LOST_RINGBUF_FULL);
        return;
    };
    let record = entry.as_mut_ptr();
    unsafe {
        (*record).header = records::header(KIND_MAPPED_FILE);
        (*record).region_id = region_id;
        (*record).mount_id = 0;
        (*record).depth = 0;
        (*record).truncated = 0;
        (*record).cut_names = 0;
        // Unread names must not leak old ring-buffer bytes: mark each one empty.
        for i in 0..MAX_PATH_COMPONENTS {
            (*record).names[i][0] = 0;
        }
        if file(&kernel_offsets())
            .and_then(|file| fill(record, file))
            .is_err()
        {
            // The agent counts a file record without components as unresolved.
            (*record).depth = 0;
        }
    }
    entry.submit(BPF_RB_FORCE_WAKEUP.into());
}

#[inline(always)]
unsafe fn read_u64(address: u64) -> Result<u64, i32> {
    unsafe { bpf_probe_read_kernel(address as *const u64) }
}

/// The `struct file *` of the current task's `fd`.
#[inline(always)]
unsafe fn fd_file(fd: i32) -> Result<u64, i32> {
    let off = kernel_offsets();
    unsafe {
        let task = bpf_get_current_task();
        let files = read_u64(task + u64::from(off.task_files))?;
        let fdt = read_u64(files + u64::from(off.files_fdt))?;
        let max_fds: u32 =
            bpf_probe_read_kernel((fdt + u64::from(off.fdtable_max_fds)) as *const u32)?;
        if fd < 0 || fd as u32 >= max_fds {
            return Err(-1);
        }
        let fd_array = read_u64(fdt + u64::from(off.fdtable_fd))?;
        match read_u64(fd_array + 8 * fd as u64)? {
            0 => Err(-1),
            file => Ok(file),
        }
    }
}

/// Dentry names (leaf first, up to the mount root) and the mount id of `file`.
#[inline(always)]
unsafe fn fill(record: *mut MappedFileRecord, file: u64) -> Result<(), i32> {
    let off = kernel_offsets();
    if file == 0 {
        return Err(-1);
    }
    unsafe {
        let mut dentry = read_u64(file + u64::from(off.file_dentry))?;
        let vfsmount = read_u64(file + u64::from(off.file_vfsmount))?;
        let mount_root = read_u64(vfsmount + u64::from(off.vfsmount_mnt_root))?;
        let mount = vfsmount - u64::from(off.mount_mnt);
        (*record).mount_id =
            bpf_probe_read_kernel((mount + u64::from(off.mount_mnt_id)) as *const u32)?;
        for i in 0..MAX_PATH_COMPONENTS {
            if dentry == mount_root {
                return Ok(());
            }
            let parent = read_u64(dentry + u64::from(off.dentry_parent))?;
            if parent == dentry {
                return Ok(());
            }
            let name = read_u64(dentry + u64::from(off.dentry_name))?;
            // A name that cannot be read fails the path (the agent then uses /proc).
            bpf_probe_read_kernel_str_bytes(name as *const u8, &mut (*record).names[i])
                .map_err(|_| -1)?;
            let len: u32 =
                bpf_probe_read_kernel((dentry + u64::from(off.dentry_name_len)) as *const u32)?;
            if len as usize >= PATH_COMPONENT_LEN {
                (*record).cut_names |= 1 << i;
            }
            (*record).depth = i as u32 + 1;
            dentry = parent;
        }
        if dentry != mount_root {
            (*record).truncated = 1;
        }
    }
    Ok(())
}
