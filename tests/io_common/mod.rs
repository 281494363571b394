//! Helpers shared by the `io_*` tests: files on the real disk, patterns that show
//! misplaced offsets, and `/proc/self/fd` checks by inode.
#![allow(dead_code)] // each test crate uses its own subset

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes whose value at `i` depends on `i` beyond a byte's period, so a read from
/// the wrong offset shows.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8) ^ (i >> 16)) as u8)
        .collect()
}

/// A file under the cargo target dir (on the real disk, not tmpfs), removed on drop.
pub struct TempFile {
    pub path: PathBuf,
}

impl TempFile {
    pub fn with(bytes: &[u8]) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let name = format!(
            "fdlend-io-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        File::create(&path)
            .and_then(|mut file| file.write_all(bytes))
            .expect("write test file");
        TempFile { path }
    }

    pub fn open(&self) -> File {
        File::open(&self.path).expect("open test file")
    }

    /// Opened with O_DIRECT, or `None` (printed) where this filesystem refuses it.
    pub fn open_direct(&self) -> Option<File> {
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(&self.path)
        {
            Ok(file) => Some(file),
            Err(error) => {
                println!(
                    "SKIP: {} cannot be opened with O_DIRECT here: {error}",
                    self.path.display()
                );
                None
            }
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// (dev, ino) of an open file.
pub fn identity(file: &File) -> (u64, u64) {
    let meta = file.metadata().unwrap();
    (meta.dev(), meta.ino())
}

/// How many of this process's fds name the file `(dev, ino)`.
pub fn open_count(identity: (u64, u64)) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::metadata(entry.ok()?.path()).ok())
        .filter(|meta| (meta.dev(), meta.ino()) == identity)
        .count()
}
