//! The vDSO as a file blazesym can read: frames in a process's `[vdso]` mapping (a
//! `clock_gettime` writing its result into a mapping) are named from the agent's own
//! vDSO, which is the same image in every 64-bit process of this kernel. Copied once
//! into a memfd (a few pages; nothing left on disk), read through `/proc/self/fd/N`.

use std::{
    fs::File,
    io::Write,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use nix::sys::memfd::{MFdFlags, memfd_create};
use procfs::process::{MMapPath, Process};

/// The module name frames in the vDSO carry, as perf prints it.
pub const MODULE: &str = "[vdso]";

/// The path of the vDSO image, or `None` when it could not be copied (logged once;
/// its frames then stay unnamed and are counted with the other unknown frames).
pub fn path() -> Option<&'static Path> {
    static IMAGE: OnceLock<Option<(File, PathBuf)>> = OnceLock::new();
    IMAGE
        .get_or_init(|| match copy() {
            Ok(image) => Some(image),
            Err(err) => {
                log::warn!("vDSO frames will stay unnamed: copying the vDSO failed: {err}");
                None
            }
        })
        .as_ref()
        .map(|(_, path)| path.as_path())
}

fn copy() -> anyhow::Result<(File, PathBuf)> {
    let vdso = Process::myself()?
        .maps()?
        .into_iter()
        .find(|m| m.pathname == MMapPath::Vdso)
        .ok_or_else(|| anyhow::anyhow!("this process has no [vdso] mapping"))?;
    let (start, end) = vdso.address;
    // SAFETY: the kernel maps the vDSO readable for the life of the process.
    let image = unsafe { std::slice::from_raw_parts(start as *const u8, (end - start) as usize) };
    let mut file = File::from(memfd_create("map-audit-vdso", MFdFlags::MFD_CLOEXEC)?);
    file.write_all(image)?;
    let path = PathBuf::from(format!("/proc/self/fd/{}", file.as_raw_fd()));
    Ok((file, path))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_copy_is_an_elf_image_with_clock_gettime() {
        let data = std::fs::read(super::path().unwrap()).unwrap();
        assert_eq!(&data[..4], b"\x7fELF");
        assert!(
            data.windows(20).any(|w| w == b"__vdso_clock_gettime"),
            "no __vdso_clock_gettime in the vDSO's symbols"
        );
    }
}
