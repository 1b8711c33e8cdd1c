//! Rust `--release` writer for tests/unwinding.rs (no frame pointers, as rustc builds
//! by default): a chain of calls, the last writing pages of a MAP_SHARED file.
use std::{fs::OpenOptions, hint::black_box, os::fd::AsRawFd};

const PAGE: usize = 4096;

#[inline(never)]
fn store_byte(base: *mut u8, page: usize) {
    unsafe { std::ptr::write_volatile(base.add(page * PAGE), page as u8) };
}

#[inline(never)]
fn write_pages(base: *mut u8, pages: usize) {
    for page in 0..pages {
        store_byte(black_box(base), page);
    }
}

#[inline(never)]
fn journal(base: *mut u8) {
    write_pages(base, black_box(4));
    black_box(());
}

fn main() {
    let path = std::env::args().nth(1).expect("a file");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(path).unwrap();
    file.set_len(16 * PAGE as u64).unwrap();
    let base = unsafe {
        libc_mmap(std::ptr::null_mut(), 16 * PAGE, 3, 1, file.as_raw_fd(), 0)
    };
    eprintln!("workload: target {:p} {:p}", base, unsafe { base.add(16 * PAGE) });
    journal(base);
    std::thread::sleep(std::time::Duration::from_millis(200));
}

unsafe extern "C" {
    #[link_name = "mmap"]
    fn libc_mmap(addr: *mut u8, len: usize, prot: i32, flags: i32, fd: i32, offset: i64) -> *mut u8;
}
