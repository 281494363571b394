//! Shared by the `glommio_*` test binaries: real on-disk files with a content tag per
//! block, `O_DIRECT` reads on std threads, and `/proc/self/fd` inspection.
#![allow(dead_code)]

use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use std::io::Write;
use std::os::fd::{AsFd, RawFd};
use std::path::{Path, PathBuf};

/// `O_DIRECT` transfer size and alignment used by the tests (the disk's logical
/// block is 512; a page satisfies any block size).
pub const BLOCK: usize = 4096;

/// A directory on a real disk, removed with its files when dropped.
pub struct TestDir(PathBuf);

impl std::ops::Deref for TestDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An empty directory for `name` on a real disk: `O_DIRECT` needs one (tmpfs
/// refuses it).
pub fn disk_dir(name: &str) -> TestDir {
    let mut candidates = vec![PathBuf::from(env!("CARGO_TARGET_TMPDIR"))];
    candidates.push(PathBuf::from("/var/tmp"));
    for base in candidates {
        let tmpfs = nix::sys::statfs::statfs(&base)
            .map(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
            .unwrap_or(true);
        if !tmpfs {
            let dir = base.join(format!("fdlend-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            return TestDir(dir);
        }
    }
    panic!("no directory on a real disk for O_DIRECT files");
}

/// The content of block `index` of file `id`: a readable tag, then filler that
/// depends on both, so a block of another file never matches.
pub fn expected_block(id: u32, index: usize) -> Vec<u8> {
    let mut block = vec![(id as u8).wrapping_mul(31) ^ (index as u8); BLOCK];
    let tag = format!("file {id} block {index};");
    block[..tag.len()].copy_from_slice(tag.as_bytes());
    block
}

/// Writes file `id` with `blocks` tagged blocks (std I/O: `DmaFile::create` is
/// write-only and would make glommio's poll probe fail) and syncs it.
pub fn write_tagged(path: &Path, id: u32, blocks: usize) {
    let mut file = std::fs::File::create(path).unwrap();
    for index in 0..blocks {
        file.write_all(&expected_block(id, index)).unwrap();
    }
    file.sync_all().unwrap();
}

/// Runs `future` on a fresh executor ([`executor`]) after [`prime_poll_probe`]: the
/// way every glommio test here starts, so no test's reads depend on which file
/// happened to be opened first on the thread.
pub fn run<T>(future: impl std::future::Future<Output = T>) -> T {
    executor().run(async move {
        prime_poll_probe().await;
        future.await
    })
}

/// Opens a non-empty `DmaFile` on the test disk, and reads it, before anything else
/// on this thread. glommio probes polled I/O at the first `DmaFile` a thread opens on
/// a device and caches the verdict for the thread; an empty first file fools the
/// probe and every later read on the device fails with `EOPNOTSUPP` (glommio #605,
/// `fdlend::glommio` module docs, `tests/glommio_probe.rs`).
pub async fn prime_poll_probe() {
    static PRIMERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PRIMERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = disk_dir(&format!("primer-{n}"));
    let path = dir.join("primer");
    write_tagged(&path, 0, 1);
    let file = glommio::io::DmaFile::open(&path).await.unwrap();
    let block = file
        .read_at(0, BLOCK)
        .await
        .expect("glommio reads the primer (see glommio #605)");
    assert_eq!(&block[..], &expected_block(0, 0)[..]);
    file.close().await.unwrap();
}

/// An executor with a small DMA arena (memlock is 8 MiB here). Tests start their
/// futures with [`prime_poll_probe`] (or use [`run`]).
pub fn executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(2 << 20)
        .make()
        .unwrap()
}

/// Reads `len` bytes at `offset` with a page-aligned buffer, as an `O_DIRECT` fd
/// requires.
pub fn pread_direct(fd: impl AsFd, offset: u64, len: usize) -> nix::Result<Vec<u8>> {
    let mut raw = vec![0u8; len + BLOCK];
    let start = raw.as_ptr().align_offset(BLOCK);
    let buf = &mut raw[start..start + len];
    let mut done = 0;
    while done < len {
        let n = nix::sys::uio::pread(fd.as_fd(), &mut buf[done..], (offset as i64) + done as i64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(buf[..done].to_vec())
}

/// `(dev, ino)`: which file an fd names, whatever its number.
pub fn identity(fd: impl AsFd) -> (u64, u64) {
    let stat = nix::sys::stat::fstat(fd.as_fd()).unwrap();
    (stat.st_dev, stat.st_ino)
}

/// `(dev, ino)` of a path.
pub fn path_identity(path: &Path) -> (u64, u64) {
    let stat = nix::sys::stat::stat(path).unwrap();
    (stat.st_dev, stat.st_ino)
}

/// True when the fd has `O_DIRECT` set.
pub fn is_direct(fd: impl AsFd) -> bool {
    let flags = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFL).unwrap();
    nix::fcntl::OFlag::from_bits_truncate(flags).contains(nix::fcntl::OFlag::O_DIRECT)
}

/// Every open fd of this process and what it links to, less the one reading
/// `/proc/self/fd` itself.
pub fn open_fds() -> Vec<(RawFd, PathBuf)> {
    let listing = PathBuf::from(format!("/proc/{}/fd", std::process::id()));
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let fd: RawFd = entry.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(entry.path()).ok()?;
            (target != listing).then_some((fd, target))
        })
        .collect()
}

/// How many of this process's fds name `path`.
pub fn fds_naming(path: &Path) -> usize {
    let path = std::fs::canonicalize(path).unwrap();
    open_fds()
        .iter()
        .filter(|(_, target)| *target == path)
        .count()
}

/// Polls `future` once; `Pending` proves it did not resolve yet.
pub async fn poll_once<F: std::future::Future + Unpin>(
    future: &mut F,
) -> std::task::Poll<F::Output> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *future).poll(cx)))
        .await
}

/// Serialises the tests of one binary. glommio closes fds with an io_uring op, which
/// ThreadSanitizer cannot see: a number closed that way and reopened by a parallel
/// test (a `/proc/self/fd` listing, say) looks to it like an unordered reuse of an fd
/// another thread read. One test at a time, the lock orders them.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
