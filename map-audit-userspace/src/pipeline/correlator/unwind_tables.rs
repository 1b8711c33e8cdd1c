//! The unwind tables the kernel's stack walk reads: built when an executable file
//! region first appears, collected when no tracked mapping uses them.

use super::*;

impl Correlator {
    /// Builds the unwind table of an executable file region's file, if it has none and
    /// the reader has not built it already (`SharedTables::ensure_for_region`).
    /// Its debug file is asked for at the same time, when it has none here.
    pub(super) fn unwind_table_for(&mut self, pid: u32, region: &Region, path: Option<&str>) {
        if region.prot & PROT_EXEC != 0
            && let Some(path) = path
            && self.symbolizer.fetches_debug_files()
            && !crate::proc::module_files::in_other_mount_namespace(pid)
        {
            self.symbolizer.module_mapped(std::path::Path::new(path));
        }
        if let Some(tables) = &self.unwind_tables
            && tables.ensure_for_region(pid, region, path)
        {
            self.table.tables_changed();
        }
    }

    /// Frees the unwind tables of files no tracked mapping uses any more.
    pub(super) fn collect_unwind_tables(&mut self) {
        let Some(tables) = &self.unwind_tables else {
            return;
        };
        let used = self
            .processes
            .values()
            .flat_map(|state| state.regions.iter())
            .filter(|t| t.region.prot & PROT_EXEC != 0)
            .map(|t| t.region.file)
            .collect();
        if tables.lock().collect(&used) {
            self.table.tables_changed();
        }
    }
}
