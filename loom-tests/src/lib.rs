//! Loom models of fdlend's liveness word and close modes; the models are in `tests/`,
//! one file per concern, each compiled only under `--cfg loom`:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=4 \
//!     cargo test --release --target-dir target-loom -p fdlend-loom-tests
//! # The deliberately broken drain ordering: passes only if loom catches it.
//! RUSTFLAGS="--cfg loom --cfg fdlend_broken_ordering" LOOM_MAX_PREEMPTIONS=4 \
//!     cargo test --release --target-dir target-loom-broken -p fdlend-loom-tests broken_ordering
//! # The sharded central decrement weakened to Release: passes only if loom catches it
//! # (`scripts/check loom` runs every broken build).
//! RUSTFLAGS="--cfg loom --cfg fdlend_broken_sharded_release" LOOM_MAX_PREEMPTIONS=4 \
//!     cargo test --release --target-dir target-loom-broken-sharded-release \
//!     -p fdlend-loom-tests --test sharded uses_before_every_central_release
//! ```
//!
//! This library holds what every model needs to look at the world rather than at
//! fdlend's own bookkeeping: a pipe whose read end witnesses the close of its write
//! end, fd identity by `fstat`, a lock that keeps models from sharing fd numbers, and
//! [`model`], which runs one model and checks that no execution leaked an fd.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::fs::File;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard};

/// One file, named by what the kernel says it is: fd numbers are reused, inodes of
/// live files are not.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Identity {
    dev: u64,
    ino: u64,
}

/// The identity of the file `fd` refers to.
pub fn identity(fd: impl AsFd) -> Identity {
    let stat = nix::sys::stat::fstat(fd).expect("fstat of an open fd");
    Identity {
        dev: stat.st_dev,
        ino: stat.st_ino,
    }
}

/// The read end of a pipe whose write end is the fd under test: reading it reports
/// end-of-file exactly when every write end is closed. Non-blocking, so asking never
/// waits.
pub struct Witness {
    read: File,
    /// The write end's number when it was made.
    pub number: RawFd,
    /// The write end's identity, to recognise its number after it is closed.
    pub id: Identity,
}

/// A fresh pipe (close-on-exec, non-blocking): the witness, and the write end to
/// lend. Models never duplicate the write end, so EOF means this very fd was closed.
pub fn pipe() -> (Witness, OwnedFd) {
    let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).expect("pipe2");
    let witness = Witness {
        read: File::from(read),
        number: write.as_raw_fd(),
        id: identity(&write),
    };
    (witness, write)
}

impl Witness {
    /// Everything written so far, and whether the write end is closed (EOF) rather
    /// than merely quiet.
    ///
    /// EOF is what the kernel reports; "closed" is what the models mean: no fd of this
    /// process names the write end any more. They have been seen to differ, rarely
    /// (twice in some hundreds of full loom runs, never reproduced on demand): a read
    /// found no EOF right after fdlend's close. So when no EOF comes, the process's
    /// own fds decide: one still naming the pipe (other than this read end) is a
    /// real leak, reported at once; with none, EOF is late from outside this process
    /// (whatever held a transient reference), and is waited for up to a second, with
    /// a line on stderr saying so.
    pub fn drain(&self) -> (Vec<u8>, bool) {
        let (bytes, eof) = self.read_available();
        if eof || self.write_end_open_here() {
            return (bytes, eof);
        }
        self.wait_for_late_eof(bytes)
    }

    fn wait_for_late_eof(&self, mut bytes: Vec<u8>) -> (Vec<u8>, bool) {
        let start = std::time::Instant::now();
        while start.elapsed() < std::time::Duration::from_secs(1) {
            std::thread::sleep(std::time::Duration::from_millis(1));
            let (more, eof) = self.read_available();
            bytes.extend(more);
            if eof {
                eprintln!(
                    "witness of fd {}: EOF came {:?} late, with no fd of this process naming the write end",
                    self.number,
                    start.elapsed()
                );
                return (bytes, true);
            }
        }
        eprintln!(
            "witness of fd {}: no EOF after 1 s, yet no fd of this process names the write end",
            self.number
        );
        (bytes, false)
    }

    /// Whether an fd of this process, other than the read end, names this pipe.
    fn write_end_open_here(&self) -> bool {
        let read_end = self.read.as_raw_fd();
        std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
            .filter(|&fd| fd != read_end)
            .any(|fd| identity_of_number(fd) == Some(self.id))
    }

    fn read_available(&self) -> (Vec<u8>, bool) {
        let mut bytes = Vec::new();
        let mut buf = [0; 64];
        loop {
            match (&self.read).read(&mut buf) {
                Ok(0) => return (bytes, true),
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => return (bytes, false),
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => panic!("reading the witness end: {error}"),
            }
        }
    }

    /// As [`drain`](Witness::drain), sorted: the order of concurrent writers is the
    /// scheduler's business, the set of bytes is not.
    pub fn drain_sorted(&self) -> (Vec<u8>, bool) {
        let (mut bytes, eof) = self.drain();
        bytes.sort_unstable();
        (bytes, eof)
    }

    /// Panics unless the write end's number no longer refers to the write end.
    pub fn assert_released(&self) {
        assert_number_released(self.number, self.id);
    }
}

/// The identity of whatever `fd` names now, if anything.
fn identity_of_number(fd: RawFd) -> Option<Identity> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `stat` is a valid out-pointer; fstat on a number we may not own only
    // reads its metadata (and fails if nothing is open under it).
    let rc = unsafe { libc::fstat(fd, &mut stat) };
    (rc == 0).then_some(Identity {
        dev: stat.st_dev,
        ino: stat.st_ino,
    })
}

/// Panics unless `fd`'s number no longer refers to the file `was`: either nothing is
/// open under it (`EBADF`) or a different file reuses it.
pub fn assert_number_released(fd: RawFd, was: Identity) {
    // libc rather than nix: the number may be closed, and nix wants a `BorrowedFd`,
    // which would claim the number is open.
    // SAFETY: F_GETFD only reads the descriptor flags of whatever `fd` names (if
    // anything); it creates, closes and borrows nothing.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags == -1 {
        assert_eq!(Errno::last(), Errno::EBADF, "F_GETFD on released fd {fd}");
        return;
    }
    let now = identity_of_number(fd).expect("fd answered F_GETFD but not fstat");
    assert_ne!(
        now, was,
        "fd {fd} still refers to the file that should be closed"
    );
}

/// Serialises the models of one test binary: they open and close real fds, and the
/// lowest-free-number rule would let one model's fresh fd take another's just-closed
/// number (the reuse model relies on getting that number itself).
pub fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    // A model that failed poisons the lock; the fds it leaked do not matter here.
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `f` under `loom::model` (bounded by `LOOM_MAX_PREEMPTIONS` and friends), alone
/// (see [`serial`]), and reports how many executions loom explored and how long that
/// took (visible with `--nocapture`): a model that explores one execution checks
/// nothing.
///
/// Every execution must close every fd it opens: afterwards `/proc/self/fd` must list
/// as many entries as before, or some interleaving leaked (or closed) an fd.
#[cfg(loom)]
pub fn model<F>(f: F)
where
    F: Fn() + Sync + Send + 'static,
{
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    let _serial = serial();
    let fds_before = open_fds();
    let executions = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&executions);
    let start = std::time::Instant::now();
    loom::model(move || {
        // Relaxed: a plain tally, read after `loom::model` has returned on this thread.
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let name = std::thread::current().name().unwrap_or("model").to_owned();
    eprintln!(
        "{name}: {} executions in {:.2?}",
        executions.load(Ordering::Relaxed),
        start.elapsed()
    );
    assert_eq!(
        open_fds(),
        fds_before,
        "{name}: open fds after all executions vs before"
    );
}

/// How many fds this process has open, as the kernel lists them.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The outcomes a model met across all of loom's executions, so a test can insist
/// that every branch it claims to check was really taken in some interleaving.
#[derive(Clone, Default)]
pub struct Seen(std::sync::Arc<Mutex<std::collections::BTreeSet<String>>>);

impl Seen {
    /// Records one outcome of the current execution.
    pub fn note(&self, outcome: impl Into<String>) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(outcome.into());
    }

    /// Panics unless the outcomes seen are exactly `expected`.
    pub fn assert_exactly(&self, expected: &[&str]) {
        let seen = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let expected: std::collections::BTreeSet<String> =
            expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(*seen, expected, "outcomes over all executions");
    }
}

/// The variant name of `error` (`"Closing"` for `Closing { fd: 4 }`), for [`Seen`].
pub fn variant(error: &fdlend::LendError) -> String {
    let debug = format!("{error:?}");
    debug
        .split([' ', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}
