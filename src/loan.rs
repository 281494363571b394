//! The handles a [`Lender`](crate::Lender) gives out: counted [`Loan`]s for any
//! thread, [`LocalLoan`]s for the owner's thread and [`Ticket`]s that hold nothing
//! open. (Raw tokens are in `raw.rs`.)

use crate::error::LendError;
use crate::fd;
use crate::liveness::{Refusal, State};
use crate::record::Record;
use crate::table;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;

/// One incarnation of an fd number: each registration of a number gets the next
/// one, so `(fd, epoch)` names one file forever, however often the number is reused.
/// 64 bits: a number would need 2^64 registrations to run out, and then its
/// registration is refused (`LendError::Exhausted`), never wrapped.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Epoch(pub(crate) u64);

impl Epoch {
    /// The raw value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Why a reference to `record`'s file (fd `fd`) was refused.
#[cold]
pub(crate) fn refusal_to_error(fd: RawFd, refusal: Refusal, record: &Record) -> LendError {
    match refusal {
        Refusal::Not(State::Closing) => LendError::Closing { fd },
        Refusal::Not(State::Dead | State::Revoked | State::Open) => gone(fd),
        Refusal::Saturated => LendError::Saturated {
            fd,
            limit: record.max_loans(),
        },
        Refusal::NotLent => LendError::NotLent { fd },
        Refusal::Live => LendError::SlotLive { fd },
    }
}

/// A handle's file is gone: `Stale` if its number names another lent file now,
/// `Closed` otherwise.
#[cold]
pub(crate) fn gone(fd: RawFd) -> LendError {
    match table::global().current(fd) {
        Some(record) if record.is_live() => LendError::Stale { fd },
        _ => LendError::Closed { fd },
    }
}

/// A counted loan of an fd: it stays open (its close deferred) until the last loan
/// is dropped. `Send + Sync + Clone`, `'static`, 8 bytes, no allocation of its own
/// (its file has one record, made when the file is lent).
///
/// Cloning and dropping cost one uncontended atomic add each, tested by its sign, as `Arc`
/// does: a loan points at its file's record, which is never reused while a loan
/// counts in it, so it needs no identity check.
pub struct Loan {
    pub(crate) record: &'static Record,
}

impl Loan {
    /// Another loan of the same file, or `Saturated` at the fd's loan limit. Works
    /// while the file is closing too: this loan keeps it open anyway.
    #[inline]
    pub fn try_clone(&self) -> Result<Loan, LendError> {
        acquire_held(self.record)
    }

    /// The incarnation this loan counts.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.record.incarnation())
    }

    /// A ticket for the same file.
    pub fn ticket(&self) -> Ticket {
        Ticket::of(self.record)
    }

    /// False only after the owner's `close_now` revoked this loan's file.
    pub fn is_current(&self) -> bool {
        self.record.is_live()
    }
}

/// One more reference to `record`'s file by a holder of one.
#[inline]
pub(crate) fn acquire_held(record: &'static Record) -> Result<Loan, LendError> {
    match record.liveness.acquire_held(|| record.admit_below()) {
        Ok(()) => Ok(Loan { record }),
        Err(refusal) => Err(refusal_to_error(record.fd(), refusal, record)),
    }
}

impl Clone for Loan {
    /// # Panics
    /// At the fd's loan limit (2^30 - 2 unless set lower with
    /// [`Lender::with_max_loans`](crate::Lender::with_max_loans)), as `Arc` aborts on
    /// overflow, and on a loan revoked by `close_now`; use [`Loan::try_clone`] where
    /// either may happen.
    #[inline]
    fn clone(&self) -> Loan {
        let record = self.record;
        if record.liveness.add_held() {
            return Loan { record };
        }
        clone_slow(record)
    }
}

/// The rest of a clone the sign did not settle (its unit is counted). Out of line
/// and returning the loan, so the hot path keeps nothing across a call.
#[cold]
#[inline(never)]
fn clone_slow(record: &'static Record) -> Loan {
    match record.liveness.acquire_held_slow(record.admit_below()) {
        Ok(()) => Loan { record },
        Err(refusal) => panic!(
            "Loan::clone: {}",
            refusal_to_error(record.fd(), refusal, record)
        ),
    }
}

impl Drop for Loan {
    #[inline]
    fn drop(&mut self) {
        self.record.release();
    }
}

impl AsFd for Loan {
    #[inline]
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: this loan's count keeps the fd open for its lifetime (the only
        // exception is the owner's unsafe `close_now`, whose contract covers it).
        unsafe { fd::borrow(self.record.fd()) }
    }
}

impl AsRawFd for Loan {
    #[inline]
    fn as_raw_fd(&self) -> RawFd {
        self.record.fd()
    }
}

impl fmt::Debug for Loan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loan")
            .field("fd", &self.record.fd())
            .field("epoch", &self.record.incarnation())
            .finish()
    }
}

/// The owner's own counted reference, shared by `Rc` between its `Lender` and
/// `LocalLoan`s: the word counts it once however many local loans share it, and its
/// release tells the word that the owner is no longer counted.
pub(crate) struct OwnerRef {
    pub(crate) record: &'static Record,
    pub(crate) fd: RawFd,
    pub(crate) epoch: u64,
}

impl OwnerRef {
    pub(crate) fn new(record: &'static Record, fd: RawFd, epoch: u64) -> OwnerRef {
        OwnerRef { record, fd, epoch }
    }

    /// A new loan of the owner's file.
    #[inline]
    pub(crate) fn loan(&self) -> Result<Loan, LendError> {
        acquire_held(self.record)
    }

    pub(crate) fn ticket(&self) -> Ticket {
        Ticket {
            fd: self.fd,
            epoch: self.epoch,
        }
    }
}

impl Drop for OwnerRef {
    fn drop(&mut self) {
        // Before the release, which may drain and wake a waiter: from here on no
        // local loan pins this thread.
        if let Some(signal) = self.record.signal() {
            signal.owner_released();
        }
        self.record.release_owner();
    }
}

impl AsFd for OwnerRef {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the owner's count keeps `fd` open while this reference lives (the
        // owner's unsafe `close_now` aside, whose contract covers it).
        unsafe { fd::borrow(self.fd) }
    }
}

/// A loan for the owner's thread: cloning and dropping it touch no atomic, because
/// all local loans share the owner's one counted reference (biased counting).
/// `!Send`; [`LocalLoan::to_send`] makes a [`Loan`] when one must cross threads.
#[derive(Clone)]
pub struct LocalLoan {
    shared: Rc<OwnerRef>,
}

impl LocalLoan {
    #[inline]
    pub(crate) fn new(shared: Rc<OwnerRef>) -> LocalLoan {
        LocalLoan { shared }
    }

    /// A counted loan of the same file, for another thread (one atomic operation).
    /// Works while the file is closing too, as [`Loan::try_clone`] does.
    #[inline]
    pub fn to_send(&self) -> Result<Loan, LendError> {
        self.shared.loan()
    }

    /// A ticket for the same file.
    pub fn ticket(&self) -> Ticket {
        self.shared.ticket()
    }

    /// The incarnation this loan counts.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.shared.epoch)
    }
}

impl AsFd for LocalLoan {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.shared.as_fd()
    }
}

impl AsRawFd for LocalLoan {
    fn as_raw_fd(&self) -> RawFd {
        self.shared.fd
    }
}

impl fmt::Debug for LocalLoan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalLoan")
            .field("fd", &self.shared.fd)
            .field("epoch", &self.shared.epoch)
            .finish()
    }
}

/// A claim on a file that holds nothing open: `Copy`, `Send`, 16 bytes, free to make
/// and to drop. [`Ticket::pin`] turns it into a [`Loan`] only if that very file is
/// still open: `(fd, epoch)` never names another file, however often the number is
/// reused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Ticket {
    fd: RawFd,
    epoch: u64,
}

impl Ticket {
    fn of(record: &Record) -> Ticket {
        Ticket {
            fd: record.fd(),
            epoch: record.incarnation(),
        }
    }

    /// A loan of the ticket's file, or why not: `Closing`, `Closed` (the number is
    /// free), `Stale` (the number names another file now), `Saturated`.
    ///
    /// A check that the number's current record counts this ticket's file, one
    /// `fetch_add` on it, then the check again (now final); a pin that finds another
    /// file adds nothing there, and one that finds it only after its add gives its
    /// unit back. While it is in flight the pin counts like a loan of its own file (so
    /// a racing `try_close` of that file may see it lent).
    #[inline]
    pub fn pin(&self) -> Result<Loan, LendError> {
        let Some((record, incarnation)) = table::global().current_with_incarnation(self.fd) else {
            return Err(LendError::Closed { fd: self.fd });
        };
        // A stale ticket stops here, before it could count on another file: the slot's
        // last registration is not its file. (Read beside the record pointer, so this
        // check puts no load between the table and the add.) The number may be
        // re-registered right after this check: that window is two instructions
        // wide, and the add below then counts for a moment on the new file, which is
        // what SAFETY.md's `Ticket` paragraph bounds.
        if incarnation != self.epoch {
            return Err(self.stale());
        }
        match record.liveness.try_acquire_new(|| record.admit_below()) {
            // The Acquire in the add made the record's fields visible, and the unit
            // now counted keeps them from changing: this check is final.
            Ok(()) if record.names(self.fd, self.epoch) => Ok(Loan { record }),
            result => self.refuse(record, result.err().map(|word| word.state())),
        }
    }

    /// A ticket whose file the number no longer names.
    #[cold]
    #[inline(never)]
    fn stale(&self) -> LendError {
        gone(self.fd)
    }

    /// Gives back a refused pin's unit (it may be the last reference of a closing
    /// file: the close then happens here) and says why.
    #[cold]
    #[inline(never)]
    fn refuse(&self, record: &'static Record, state: Option<State>) -> Result<Loan, LendError> {
        let mine = record.names(self.fd, self.epoch);
        // Read before the release (the fields may change after it); saturating, as a
        // stale pin may read a record whose fields are not written yet.
        let limit = record.admit_below().saturating_sub(1) as u32;
        record.release();
        Err(match state {
            _ if !mine => gone(self.fd),
            Some(State::Closing) => LendError::Closing { fd: self.fd },
            Some(State::Dead | State::Revoked) => gone(self.fd),
            Some(State::Open) | None => LendError::Saturated { fd: self.fd, limit },
        })
    }

    /// True while the ticket's file is open or draining.
    pub fn is_current(&self) -> bool {
        table::global()
            .current(self.fd)
            .is_some_and(|record| record.is_live() && record.names(self.fd, self.epoch))
    }

    /// The fd number (which may name another file once the ticket is stale).
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The incarnation the ticket names.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch)
    }
}

/// The epoch of the file currently lent under `fd`'s number, if any.
pub fn current_epoch(fd: BorrowedFd<'_>) -> Option<Epoch> {
    let record = table::global().current(fd.as_raw_fd())?;
    record.is_live().then(|| Epoch(record.incarnation()))
}

/// True while `(fd, epoch)` names a file that is lent and not yet closed: the check
/// a raw token's holder makes before trusting it.
pub fn is_current(fd: BorrowedFd<'_>, epoch: Epoch) -> bool {
    Ticket {
        fd: fd.as_raw_fd(),
        epoch: epoch.0,
    }
    .is_current()
}
