//! The kernel's unwind tables (`UNWIND_ROWS`, `FILE_TABLES`): one table per executable
//! file, keyed by the file's (device, inode) as the kernel sees it, shared by every
//! process that maps the file. Built when the agent first sees a mapping of the file
//! (a region record, the /proc load at start, or before a command it starts runs), off
//! the fault path. Rows are written through a memory mapping of `UNWIND_ROWS` (one
//! system call per row would cost ~30 ms for libc), then the file's entry goes in.
//!
//! Bounded: a file whose rows do not fit is counted (`unwind_table_full`) and its
//! frames end their stacks (`no_unwind_info`). Tables no tracked mapping uses any more
//! are freed at the agent's stats period (`collect`).

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    os::fd::AsFd,
    path::Path,
    ptr::NonNull,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use anyhow::{Context, Result};
use aya::maps::{
    HashMap as BpfHashMap, MapData,
    lpm_trie::{Key, LpmTrie},
};
use map_audit_common::{
    records::{FAULT_VIA_PARENT, FaultRecord, SnapshotFaultRecord},
    region::{
        FileKey, ForkFallback, LOOKUP_PREFIX_LEN, PROT_EXEC, Region, RegionKeyData, change_applies,
        region_key_data,
    },
    unwind::{ROW_NONE, STACK_END_COMPLETE, UnwindRow, UnwindTable},
};

use super::{
    cfi_rows,
    finish::{self, Code},
};
use crate::kernel::region_table::removal_failed;

/// Bytes per row in the mapped array (the kernel rounds values up to 8).
const ROW_STRIDE: usize = std::mem::size_of::<UnwindRow>().next_multiple_of(8);

/// What the agent counts of its tables.
#[derive(Debug, Default, Clone, Copy)]
pub struct TableCounters {
    /// Files whose rows did not fit (`--unwind-table-rows`).
    pub full: u64,
    /// Files without CFI or that could not be read.
    pub unbuilt: u64,
    pub built: u64,
    pub rows: u64,
    /// File entries whose removal failed (see `region_table::removal_failed`).
    pub removals_failed: u64,
    /// Fault stacks the kernel stopped at a table not built yet, finished here to
    /// their end, and those that still ended early.
    pub stacks_finished: u64,
    pub stacks_unfinished: u64,
}

pub struct UnwindTables {
    /// `UNWIND_ROWS`, mapped; `capacity` rows.
    rows: NonNull<u8>,
    capacity: u32,
    /// Keeps the map's fd open while it is mapped.
    _rows_map: MapData,
    files: BpfHashMap<MapData, FileKey, UnwindTable>,
    /// The kernel's region table, read to finish walks (`finish_stack`), and
    /// `--unwind`'s mode (`AgentConfig::unwind_mode`).
    regions: LpmTrie<MapData, RegionKeyData, Region>,
    /// The kernel's fork fallbacks: a child's code is in its parent's regions until
    /// the agent has copied them.
    fork_fallbacks: BpfHashMap<MapData, u32, ForkFallback>,
    unwind_mode: u32,
    /// Tables in the kernel (a file without CFI has one without rows, so the kernel
    /// knows it is not pending), and files whose empty table could not be stored
    /// either (never tried again).
    built: HashMap<FileKey, UnwindTable>,
    failed: HashSet<FileKey>,
    /// Free row ranges (start, length), from the end of the used part too.
    free: Vec<(u32, u32)>,
    pub counters: TableCounters,
}

// SAFETY: the mapping is owned by this value and only used through `&mut self`.
unsafe impl Send for UnwindTables {}

/// The tables, shared by the ring-buffer reader, which builds a library's table as its
/// mapping's record arrives (a library loaded with `dlopen` is called right away, and
/// the pipeline may be busy symbolising), and the correlator, which frees them.
#[derive(Clone)]
pub struct SharedTables(Arc<Mutex<UnwindTables>>);

impl SharedTables {
    pub fn new(tables: UnwindTables) -> Self {
        Self(Arc::new(Mutex::new(tables)))
    }

    /// The tables. A thread that panicked holding them left them whole: each edit is
    /// complete before the kernel can see it.
    pub fn lock(&self) -> MutexGuard<'_, UnwindTables> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds the table of executable file region `region` of `pid` if its file has
    /// none, reading the file through the mapping's own /proc entry (the file the
    /// process mapped, even in another mount namespace), else through `path`. Returns
    /// whether a table was added.
    pub fn ensure_for_region(&self, pid: u32, region: &Region, path: Option<&str>) -> bool {
        if region.prot & PROT_EXEC == 0 || region.file.inode == 0 {
            return false;
        }
        let mut tables = self.lock();
        if tables.known(&region.file) {
            return false;
        }
        let map_file = format!("/proc/{pid}/map_files/{:x}-{:x}", region.start, region.end);
        tables.ensure(region.file, || {
            File::open(&map_file)
                .ok()
                .or_else(|| path.and_then(|p| File::open(p).ok()))
        })
    }
}

impl UnwindTables {
    /// Maps `UNWIND_ROWS` (`capacity` rows) into this process.
    pub fn new(
        rows_map: MapData,
        capacity: u32,
        files: BpfHashMap<MapData, FileKey, UnwindTable>,
        regions: LpmTrie<MapData, RegionKeyData, Region>,
        fork_fallbacks: BpfHashMap<MapData, u32, ForkFallback>,
        unwind_mode: u32,
    ) -> Result<Self> {
        let length = (capacity as usize * ROW_STRIDE).next_multiple_of(4096);
        let mapped = unsafe {
            nix::sys::mman::mmap(
                None,
                std::num::NonZeroUsize::new(length).context("an empty unwind table")?,
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                rows_map.fd().as_fd(),
                0,
            )
        }
        .context("mapping the kernel's unwind rows failed (BPF_F_MMAPABLE arrays: Linux 5.5+)")?;
        Ok(Self {
            rows: mapped.cast(),
            capacity,
            _rows_map: rows_map,
            files,
            regions,
            fork_fallbacks,
            unwind_mode,
            built: HashMap::new(),
            failed: HashSet::new(),
            free: vec![(0, capacity)],
            counters: TableCounters::default(),
        })
    }

    /// Whether `file` has a table (or was tried).
    pub fn known(&self, file: &FileKey) -> bool {
        self.built.contains_key(file) || self.failed.contains(file)
    }

    /// Builds the table of `file`, opened by `open` (which must give that very file:
    /// its device and inode are checked), unless it is known. Returns whether a table
    /// was added (the caller then tells the fault path's caches). A file read and found
    /// without CFI (or too big) is known from then on; one that could not be opened is
    /// not.
    pub fn ensure(&mut self, file: FileKey, open: impl FnOnce() -> Option<File>) -> bool {
        if file.inode == 0 || self.known(&file) {
            return false;
        }
        let started = std::time::Instant::now();
        // Not marked when it cannot be read: the process that mapped it may have exited
        // before the agent looked (a short-lived first user of a library); the next
        // mapping, or a fault's walk that stops at it (`finish_stack`), tries again.
        let Some(data) = open().and_then(|f| read_if_same(f, &file)) else {
            log::debug!("unwind table of {file:?} not built: the file is gone or was replaced");
            return false;
        };
        let bytes = data.len();
        let rows = cfi_rows::rows_of_elf(&data);
        drop(data);
        let took = started.elapsed();
        let rows = match rows {
            Ok(rows) if !rows.is_empty() => rows,
            Ok(_) | Err(_) => {
                log::debug!("no unwind table for {file:?}: {:?}", rows.err());
                self.counters.unbuilt += 1;
                self.store_empty(file);
                return false;
            }
        };
        let Some(first) = self.allocate(rows.len() as u32) else {
            self.counters.full += 1;
            self.store_empty(file);
            return false;
        };
        self.write_rows(first, &rows);
        let table = UnwindTable {
            first_row: first,
            rows: rows.len() as u32,
        };
        if let Err(err) = self.files.insert(file, table, 0) {
            log::debug!("unwind table of {file:?} not stored: {err}");
            self.release(table);
            self.counters.full += 1;
            self.store_empty(file);
            return false;
        }
        log::debug!(
            "unwind table of {file:?}: {} rows from a {} KiB file in {took:?}",
            rows.len(),
            bytes / 1024
        );
        self.counters.built += 1;
        self.counters.rows += rows.len() as u64;
        self.built.insert(file, table);
        true
    }

    /// Tells the kernel `file` has no rows: its frames end stacks (or go on by frame
    /// pointers) instead of waiting for the agent (`finish_stack`).
    fn store_empty(&mut self, file: FileKey) {
        let empty = UnwindTable::default();
        match self.files.insert(file, empty, 0) {
            Ok(()) => {
                self.built.insert(file, empty);
            }
            Err(err) => {
                log::debug!("empty unwind table of {file:?} not stored: {err}");
                self.failed.insert(file);
            }
        }
    }

    /// The rows of `file`'s table (empty for a file without CFI); `None` when it has
    /// no table.
    fn rows_of(&self, file: &FileKey) -> Option<&[UnwindRow]> {
        let table = self.built.get(file)?;
        if table.rows == 0 {
            return Some(&[]);
        }
        // SAFETY: the table's rows are inside the mapping, written by `write_rows`
        // before the table went in, and only rewritten after it is removed (`&mut`).
        Some(unsafe {
            std::slice::from_raw_parts(
                self.rows
                    .as_ptr()
                    .add(table.first_row as usize * ROW_STRIDE)
                    .cast::<UnwindRow>(),
                table.rows as usize,
            )
        })
    }

    /// Finishes the walk of a fault the kernel stopped at a table it did not have
    /// yet, with the tables built since (the records before this one: the mappings
    /// of its process, whose tables were built as they came). A table still missing
    /// is built now, from the process's mapping.
    pub fn finish_stack(&mut self, snapshot: &SnapshotFaultRecord) -> FaultRecord {
        let mode = self.unwind_mode;
        let tgid = snapshot.fault.header.tgid;
        let generation = snapshot.fault.region.generation;
        let own = snapshot.fault.flags & FAULT_VIA_PARENT == 0;
        let record = finish::finish(snapshot, mode, |pc| {
            // As the kernel's walk (`region_table::lookup_code`).
            let Some(region) = self.code_region(tgid, generation, own, pc) else {
                return Code::NoRow;
            };
            if region.file.inode == 0 {
                return Code::Anonymous;
            }
            // Only from the process's own mapping: a process gone already must not
            // leave its files marked as without CFI.
            if !self.known(&region.file) {
                let map_file =
                    format!("/proc/{tgid}/map_files/{:x}-{:x}", region.start, region.end);
                if let Ok(file) = File::open(&map_file) {
                    self.ensure(region.file, || Some(file));
                }
            }
            let offset = pc - region.start + region.file_offset;
            match self
                .rows_of(&region.file)
                .and_then(|rows| cfi_rows::row_at(rows, u32::try_from(offset).ok()?).copied())
            {
                Some(row) if row.kind != ROW_NONE => Code::Row(row),
                _ => Code::NoRow,
            }
        });
        if record.stack_end == STACK_END_COMPLETE {
            self.counters.stacks_finished += 1;
        } else {
            self.counters.stacks_unfinished += 1;
        }
        record
    }

    /// The region holding code at `pc` for a walk in `tgid`'s generation `generation`
    /// (`own`) or in its parent's (a fork the agent had not copied when the kernel
    /// found the fault's region): the kernel's rule, `region_table::lookup_code`.
    fn code_region(&self, tgid: u32, generation: u32, own: bool, pc: u64) -> Option<Region> {
        let lookup = |tgid, generation| {
            let key = Key::new(LOOKUP_PREFIX_LEN, region_key_data(tgid, generation, pc));
            self.regions.get(&key, 0).ok()
        };
        if own && let Some(region) = lookup(tgid, generation) {
            return Some(region);
        }
        let fallback = self.fork_fallbacks.get(&tgid, 0).ok()?;
        let walks_this_fork = if own {
            fallback.child_generation == generation
        } else {
            fallback.parent_generation == generation
        };
        if !walks_this_fork {
            return None;
        }
        lookup(fallback.parent_tgid, fallback.parent_generation)
            .filter(|region| change_applies(region, fallback.fork_seq))
    }

    /// Frees the tables of files not in `used` (no tracked mapping left). Returns
    /// whether any went (the caller then tells the fault path's caches).
    pub fn collect(&mut self, used: &HashSet<FileKey>) -> bool {
        let unused: Vec<FileKey> = self
            .built
            .keys()
            .filter(|file| !used.contains(file))
            .copied()
            .collect();
        for file in &unused {
            if let Some(table) = self.built.remove(file) {
                let removed = self.files.remove(file);
                self.counters.removals_failed += u64::from(removal_failed(removed));
                if table.rows > 0 {
                    self.release(table);
                }
            }
        }
        !unused.is_empty()
    }

    fn write_rows(&mut self, first: u32, rows: &[UnwindRow]) {
        for (i, row) in rows.iter().enumerate() {
            let index = first as usize + i;
            debug_assert!(index < self.capacity as usize);
            // SAFETY: `index` is inside the mapping (allocated range); rows are plain
            // integers and the kernel reads them only once the file's entry is in.
            unsafe {
                self.rows
                    .as_ptr()
                    .add(index * ROW_STRIDE)
                    .cast::<UnwindRow>()
                    .write_unaligned(*row);
            }
        }
    }

    /// First fit.
    fn allocate(&mut self, rows: u32) -> Option<u32> {
        let i = self.free.iter().position(|&(_, len)| len >= rows)?;
        let (start, len) = self.free[i];
        if len == rows {
            self.free.remove(i);
        } else {
            self.free[i] = (start + rows, len - rows);
        }
        Some(start)
    }

    fn release(&mut self, table: UnwindTable) {
        self.free.push((table.first_row, table.rows));
        self.free.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.free.len());
        for &(start, len) in &self.free {
            match merged.last_mut() {
                Some((s, l)) if *s + *l == start => *l += len,
                _ => merged.push((start, len)),
            }
        }
        self.free = merged;
    }
}

impl Drop for UnwindTables {
    fn drop(&mut self) {
        let length = (self.capacity as usize * ROW_STRIDE).next_multiple_of(4096);
        // The agent is done with the rows; a failed unmap only leaves the mapping.
        if let Err(err) = unsafe { nix::sys::mman::munmap(self.rows.cast(), length) } {
            log::debug!("unmapping the unwind rows failed: {err}");
        }
    }
}

/// The file's bytes, if it is the file `key` names.
fn read_if_same(file: File, key: &FileKey) -> Option<memmap2::Mmap> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let dev = meta.dev();
    let same = FileKey::new(libc::major(dev), libc::minor(dev), meta.ino()) == *key;
    if !same {
        return None;
    }
    // Mapped, not read: only the CFI's pages are touched, and they leave with the map
    // (gdb's 60 files are 50 MiB). A file truncated meanwhile would fault here, as it
    // would in every process running it; blazesym maps the same files.
    // SAFETY: read-only use, dropped before this file's table is built.
    unsafe { memmap2::Mmap::map(&file) }.ok()
}

/// The key of the file at `path`, as the kernel names it.
pub fn key_of_path(path: &Path) -> Option<FileKey> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.dev();
    Some(FileKey::new(libc::major(dev), libc::minor(dev), meta.ino()))
}
