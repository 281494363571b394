//! The per-file record: a liveness word and the file it counts (fd number,
//! incarnation, loan limit, close signal). Every counted handle points at one.
//!
//! Records are *type-stable*: once allocated they are never freed while their table
//! lives, only recycled, and only when their word is dead (no reference counted).
//! So a handle's pointer always reaches a valid record, and a loan revoked by
//! `close_now` keeps counting down on its own detached record rather than on
//! whatever file later gets its fd number. Tickets, which hold no reference, go
//! through the table to the number's current record and check its fd and
//! incarnation after their `fetch_add` (see `Ticket::pin`).

use crate::close::{self, CloseSignal};
use crate::liveness::{Liveness, Released, State};
use crate::sync::{lock, Arc, AtomicI32, AtomicU64, Mutex, Ordering};
use std::os::fd::RawFd;

/// One file's counts and identity. Aligned to two cache lines so that two hot files
/// never share a line (adjacent-line prefetch pairs them on x86), and laid out so the
/// word has its line to itself: every reference writes it, while the fields beside it
/// are only read once the file is open. A clone that read its limit from the word's
/// line would pull that line in shared first and then again to write it, a second
/// transfer per clone when two threads clone one file.
#[repr(C, align(128))]
pub(crate) struct Record {
    pub(crate) liveness: Liveness,
    file: File,
}

/// What the word counts, on the record's second cache line.
#[repr(align(64))]
struct File {
    /// The loan limit + 1, read by every clone.
    admit_below: AtomicU64,
    fd: AtomicI32,
    incarnation: AtomicU64,
    /// Set by a closing owner before its reference is released; taken by the one
    /// thread that drains the word.
    signal: Mutex<Option<Arc<CloseSignal>>>,
}

// The fields of `File` are written only while the word is dead, under the fd number's
// registration lock, and published by `Liveness::open`'s Release. Every reader holds
// a reference taken after that (its Acquire, or a handle passed from a thread that
// had it), except stale pins, which read them only to find that they do not match.
// They are atomics so that those stale reads are not data races; Relaxed suffices.
impl Record {
    pub(crate) fn new() -> Record {
        Record {
            liveness: Liveness::new(),
            file: File {
                admit_below: AtomicU64::new(0),
                fd: AtomicI32::new(-1),
                incarnation: AtomicU64::new(0),
                signal: Mutex::new(None),
            },
        }
    }

    /// Writes the identity of the file about to be opened in this dead record.
    pub(crate) fn set_file(&self, fd: RawFd, incarnation: u64, max_loans: u32) {
        // Relaxed: published by the `open` that follows (see above).
        self.file.fd.store(fd, Ordering::Relaxed);
        self.file.incarnation.store(incarnation, Ordering::Relaxed);
        self.file
            .admit_below
            .store(u64::from(max_loans) + 1, Ordering::Relaxed);
    }

    #[inline]
    pub(crate) fn fd(&self) -> RawFd {
        // Relaxed: see above.
        self.file.fd.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn incarnation(&self) -> u64 {
        // Relaxed: see above.
        self.file.incarnation.load(Ordering::Relaxed)
    }

    #[inline]
    pub(crate) fn admit_below(&self) -> u64 {
        // Relaxed: see above.
        self.file.admit_below.load(Ordering::Relaxed)
    }

    pub(crate) fn max_loans(&self) -> u32 {
        (self.admit_below() - 1) as u32
    }

    /// True when this record counts incarnation `incarnation` of fd number `fd`.
    /// Meaningful to a caller holding a reference here (then nothing can change it);
    /// a stale caller gets some answer and must not trust the fields beyond it.
    #[inline]
    pub(crate) fn names(&self, fd: RawFd, incarnation: u64) -> bool {
        self.incarnation() == incarnation && self.fd() == fd
    }

    /// True while the record counts a file that is open or draining.
    pub(crate) fn is_live(&self) -> bool {
        matches!(self.liveness.load().state(), State::Open | State::Closing)
    }

    /// Leaves `signal` for the drainer. The replaced value (always `None` in
    /// practice) is dropped after the lock is released.
    pub(crate) fn leave_signal(&self, signal: Option<Arc<CloseSignal>>) {
        let replaced = std::mem::replace(&mut *lock(&self.file.signal), signal);
        drop(replaced);
    }

    /// The close signal, if a closing owner left one.
    pub(crate) fn signal(&self) -> Option<Arc<CloseSignal>> {
        lock(&self.file.signal).clone()
    }

    /// Gives back one reference of a handle (a loan, a refused pin).
    #[inline]
    pub(crate) fn release(&'static self) {
        if !self.liveness.subtract() {
            self.release_slow();
        }
    }

    /// The rest of a release the sign did not settle. Out of line and taking only
    /// `self`, so the hot path keeps nothing across a call (no register to save
    /// before its atomic add).
    #[cold]
    #[inline(never)]
    fn release_slow(&'static self) {
        match self.liveness.release_slow() {
            Released::Kept => {}
            other => self.finish(other),
        }
    }

    /// The owner gives back its own reference.
    pub(crate) fn release_owner(&'static self) {
        let released = self.liveness.release_owner();
        self.finish(released);
    }

    /// What the one thread that killed the word does next.
    #[cold]
    #[inline(never)]
    pub(crate) fn finish(&'static self, released: Released) {
        match released {
            Released::Kept => {}
            Released::Drained => {
                // The fd number is still open (closed just below), so no registration
                // of it can reuse this record before we are done reading it.
                let fd = self.fd();
                let signal = lock(&self.file.signal).take();
                close::finish_drained(signal, fd);
            }
            Released::Retired => pool().recycle(self),
        }
    }
}

/// Where records come from and go back to. Records are allocated one by one and
/// never freed while the pool lives (the process, or one loom execution), so a
/// pointer to one is always valid; dead revoked records wait here for reuse.
pub(crate) struct Pool {
    spare: Mutex<Vec<RecordPtr>>,
    all: Mutex<Vec<RecordPtr>>,
}

/// A record pointer that may sit in the pool's lists.
#[derive(Clone, Copy)]
struct RecordPtr(*mut Record);

// SAFETY: a `RecordPtr` only moves a pointer to a `Record`, which is `Sync` (its
// fields are atomics and a mutex); the pointee outlives every list it is in.
unsafe impl Send for RecordPtr {}

impl Pool {
    #[cfg(not(loom))]
    const fn new() -> Pool {
        Pool {
            spare: Mutex::new(Vec::new()),
            all: Mutex::new(Vec::new()),
        }
    }

    #[cfg(loom)]
    fn new() -> Pool {
        Pool {
            spare: Mutex::new(Vec::new()),
            all: Mutex::new(Vec::new()),
        }
    }

    /// A dead record: a recycled one if any, else a new one.
    pub(crate) fn take(&'static self) -> &'static Record {
        let spare = lock(&self.spare).pop();
        let record = spare.unwrap_or_else(|| {
            let fresh = RecordPtr(Box::into_raw(Box::new(Record::new())));
            lock(&self.all).push(fresh);
            fresh
        });
        // SAFETY: every `RecordPtr` comes from `Box::into_raw` above and is freed only
        // by the pool's `Drop`, which needs `&mut`; records are only read through
        // shared references (atomics, a mutex).
        unsafe { &*record.0 }
    }

    /// Puts back a record whose word the caller just killed (`Released::Retired`).
    fn recycle(&self, record: &'static Record) {
        lock(&self.spare).push(RecordPtr(std::ptr::from_ref(record).cast_mut()));
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // As the table's pages: a failing loom model drops this while unwinding,
        // where touching loom objects aborts; leak then, so loom's report gets out.
        #[cfg(loom)]
        if std::thread::panicking() {
            return;
        }
        let all = std::mem::take(&mut *lock(&self.all));
        for record in all {
            // SAFETY: from `Box::into_raw` in `take`, listed once in `all`; `&mut self`
            // means no handle of this pool's records is left to use it.
            drop(unsafe { Box::from_raw(record.0) });
        }
    }
}

#[cfg(not(loom))]
static POOL: Pool = Pool::new();

/// The process-wide pool.
#[cfg(not(loom))]
pub(crate) fn pool() -> &'static Pool {
    &POOL
}

#[cfg(loom)]
loom::lazy_static! {
    static ref POOL: Pool = Pool::new();
}

/// The pool of the current loom execution (fresh for each one).
#[cfg(loom)]
pub(crate) fn pool() -> &'static Pool {
    &POOL
}
