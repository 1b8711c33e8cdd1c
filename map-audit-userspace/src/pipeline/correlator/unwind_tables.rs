//! The unwind tables the kernel's stack walk reads: built when an executable file
//! region first appears, collected when no tracked mapping uses them.

use super::*;

impl Correlator {
    /// Builds the unwind table of an executable file region's file, if it has none
    /// (read through the mapping's own /proc entry: the file the process mapped, even
    /// in another mount namespace).
    pub(super) fn unwind_table_for(&mut self, pid: u32, region: &Region, path: Option<&str>) {
        if region.prot & PROT_EXEC == 0 || region.file.inode == 0 {
            return;
        }
        let Some(tables) = &mut self.unwind_tables else {
            return;
        };
        if tables.known(&region.file) {
            return;
        }
        let map_file = format!("/proc/{pid}/map_files/{:x}-{:x}", region.start, region.end);
        let added = tables.ensure(region.file, || {
            std::fs::File::open(&map_file)
                .ok()
                .or_else(|| path.and_then(|p| std::fs::File::open(p).ok()))
        });
        if added {
            self.table.tables_changed();
        }
    }

    /// Frees the unwind tables of files no tracked mapping uses any more.
    pub(super) fn collect_unwind_tables(&mut self) {
        let Some(tables) = &mut self.unwind_tables else {
            return;
        };
        let used = self
            .processes
            .values()
            .flat_map(|state| state.regions.iter())
            .filter(|t| t.region.prot & PROT_EXEC != 0)
            .map(|t| t.region.file)
            .collect();
        if tables.collect(&used) {
            self.table.tables_changed();
        }
    }
}
