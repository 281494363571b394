//! Helpers shared by the integration tests: real files, real pipes, real fd counts,
//! and a tiny `block_on`. Every test binary compiles its own copy, so each binary
//! uses only some of these.
#![allow(dead_code)]

use nix::fcntl::OFlag;
use nix::sys::memfd::{memfd_create, MFdFlags};
use std::fs::File;
use std::future::Future;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

/// Serialises the tests of one binary. Needed wherever a test counts the process's
/// fds or relies on `open()` handing back a particular recycled number: the test
/// harness runs tests on parallel threads that share one fd table.
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    // A failed test poisons the lock; the next test must still run, not cascade.
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Entries in `/proc/self/fd`: the kernel's view of how many fds this process holds.
/// (The directory's own fd is counted every time, so comparisons are exact.)
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
}

/// A file's identity. fd numbers are reused; `(dev, ino)` is not, while the file lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
}

pub fn identity(fd: impl AsFd) -> Identity {
    let stat = nix::sys::stat::fstat(fd).expect("fstat");
    Identity {
        dev: stat.st_dev,
        ino: stat.st_ino,
    }
}

pub fn is_regular(fd: impl AsFd) -> bool {
    let stat = nix::sys::stat::fstat(fd).expect("fstat");
    stat.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// `len` bytes that differ for every `tag`, so a read from the wrong file shows.
pub fn pattern(tag: u64, len: usize) -> Vec<u8> {
    let mut state = tag.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// A memfd holding `content` (under Miri, which has no `memfd_create`, a disk file).
pub fn memfd_with(content: &[u8]) -> File {
    if cfg!(miri) {
        return disk_file_with(content);
    }
    let mut file =
        File::from(memfd_create("fdlend-itest", MFdFlags::MFD_CLOEXEC).expect("memfd_create"));
    file.write_all(content).expect("write memfd");
    file
}

/// A regular file on the real disk (cargo's per-package tmp dir under the target dir)
/// holding `content`. Its name is unlinked at once: the open file is all we need, and
/// nothing is left behind when a test fails.
pub fn disk_file_with(content: &[u8]) -> File {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "fdlend-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .expect("create disk file");
    std::fs::remove_file(&path).expect("unlink disk file");
    file.write_all(content).expect("write disk file");
    file
}

/// Reads `len` bytes at `offset` with `pread`, as a loan's holder would.
pub fn pread_exact(fd: impl AsFd, len: usize, offset: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    let mut done = 0;
    while done < len {
        let n = nix::sys::uio::pread(fd.as_fd(), &mut buf[done..], (offset + done) as libc::off_t)
            .expect("pread");
        assert_ne!(n, 0, "file shorter than expected: EOF at {}", offset + done);
        done += n;
    }
    buf
}

/// A pipe, both ends close-on-exec and non-blocking (so the read end can be asked
/// "is any writer left?" without blocking).
pub fn pipe() -> (File, File) {
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).expect("pipe2");
    (File::from(read), File::from(write))
}

/// What a pipe's read end sees of its write end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteEnd {
    /// Some write end is still open (a read would block).
    Open,
    /// Every write end is closed (a read returns EOF).
    Closed,
}

/// Drains what is buffered in the pipe and reports whether its write end is still
/// open: `EAGAIN` means a writer is left, a 0-byte read means none is.
pub fn read_pipe(mut read: &File) -> (Vec<u8>, WriteEnd) {
    let mut seen = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match read.read(&mut buf) {
            Ok(0) => return (seen, WriteEnd::Closed),
            Ok(n) => seen.extend_from_slice(&buf[..n]),
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                return (seen, WriteEnd::Open)
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => panic!("read from pipe: {error}"),
        }
    }
}

pub fn write_end(read: &File) -> WriteEnd {
    read_pipe(read).1
}

/// Writes `bytes` through any fd (a loan, a raw token, a local loan).
pub fn write_through(fd: impl AsFd, bytes: &[u8]) {
    let n = nix::unistd::write(fd, bytes).expect("write through the lent fd");
    assert_eq!(n, bytes.len(), "short pipe write");
}

/// Opens `/dev/null` until `open()` hands back number `fd` (it always returns the
/// lowest free number), so a test can check that nothing closes the number again.
/// `None` if another thread holds the number. Only meaningful under [`serial`].
pub fn occupy(fd: RawFd) -> Option<File> {
    occupy_with(fd, || File::open("/dev/null").expect("open /dev/null"))
}

/// As [`occupy`], with files made by `open`.
pub fn occupy_with(fd: RawFd, mut open: impl FnMut() -> File) -> Option<File> {
    let mut lower = Vec::new();
    loop {
        let file = open();
        match file.as_raw_fd().cmp(&fd) {
            std::cmp::Ordering::Less => lower.push(file),
            std::cmp::Ordering::Equal => return Some(file),
            std::cmp::Ordering::Greater => return None,
        }
    }
}

/// Takes the number a lent fd had, now that it is closed, and checks after `rest`
/// (everything still left of its lender) that nothing closed the number a second time.
/// Only meaningful under [`serial`].
pub fn assert_not_closed_again(fd: RawFd, rest: impl FnOnce()) {
    let occupant = occupy(fd).expect("the closed fd number is free again for the next open()");
    let occupant_id = identity(&occupant);
    rest();
    match nix::sys::stat::fstat(&occupant) {
        Ok(stat) => assert_eq!(
            Identity {
                dev: stat.st_dev,
                ino: stat.st_ino
            },
            occupant_id,
            "fd {fd} was closed again and reused by another file"
        ),
        Err(errno) => {
            // Something closed the occupant behind its back; dropping it would close
            // the number once more (and debug std aborts on that), so leak the handle.
            std::mem::forget(occupant);
            panic!("fd {fd} was closed a second time: fstat says {errno}");
        }
    }
}

/// Waits for something another thread does. Not a timing assertion: the bound only
/// turns a hang (the bug it would be) into a failure with a message.
pub fn spin_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "hang guard: gave up waiting for {what}"
        );
        thread::yield_now();
    }
}

/// Joins `handle`, re-raising its panic so the test fails with the thread's message.
pub fn join<T>(handle: thread::JoinHandle<T>) -> T {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

struct Unpark {
    thread: Thread,
    wakes: AtomicUsize,
}

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // SeqCst: `wakes()` is read after joining the waking thread; any order works,
        // the count only has to be exact.
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.thread.unpark();
    }
}

/// The smallest executor: polls on this thread, parks while pending, and counts the
/// wake-ups it got (so a test can tell "woken by the other thread" from "ready at once").
pub struct Parker {
    unpark: Arc<Unpark>,
    waker: Waker,
}

impl Parker {
    pub fn new() -> Parker {
        let unpark = Arc::new(Unpark {
            thread: thread::current(),
            wakes: AtomicUsize::new(0),
        });
        let waker = Waker::from(Arc::clone(&unpark));
        Parker { unpark, waker }
    }

    pub fn poll<F: Future + Unpin>(&self, future: &mut F) -> Poll<F::Output> {
        std::pin::Pin::new(future).poll(&mut Context::from_waker(&self.waker))
    }

    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let mut future = pin!(future);
        let mut cx = Context::from_waker(&self.waker);
        loop {
            if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
                return output;
            }
            // Spurious unparks just cost another poll.
            thread::park();
        }
    }

    pub fn wakes(&self) -> usize {
        self.unpark.wakes.load(Ordering::SeqCst)
    }
}

pub fn block_on<F: Future>(future: F) -> F::Output {
    Parker::new().block_on(future)
}

/// The `LendError` inside an `io::Error` from `close_wait`, if that is what it holds.
pub fn lend_error(error: &io::Error) -> Option<fdlend::LendError> {
    error
        .get_ref()?
        .downcast_ref::<fdlend::LendError>()
        .copied()
}

/// True when `message` names `fd` as a whole number (not as part of a longer one).
pub fn mentions_fd(message: &str, fd: RawFd) -> bool {
    message
        .split(|c: char| !c.is_ascii_digit())
        .any(|word| word == fd.to_string())
}
