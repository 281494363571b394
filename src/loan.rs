//! The handles a [`Lender`](crate::Lender) gives out: counted [`Loan`]s for any
//! thread, [`LocalLoan`]s for the owner's thread, [`Ticket`]s that hold nothing open,
//! and the raw-token functions behind `lend_fd`.

use crate::close;
use crate::error::LendError;
use crate::fd;
use crate::liveness::{Holder, Refusal, Released, State, Taking};
use crate::table::{self, Slot};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;

/// One incarnation of an fd number: advances every time fdlend sees the fd closed,
/// so `(fd, epoch)` names one file even after the number is reused.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Epoch(pub(crate) u32);

impl Epoch {
    /// The raw value (wraps after 2^32 closes of the same fd number).
    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

pub(crate) fn refusal_to_error(fd: RawFd, refusal: Refusal, slot: &Slot) -> LendError {
    match refusal {
        Refusal::Closed => LendError::Closed { fd },
        Refusal::Stale => LendError::Stale { fd },
        Refusal::Closing => LendError::Closing { fd },
        Refusal::Saturated => LendError::Saturated {
            fd,
            limit: slot.limit(),
        },
        Refusal::Live => LendError::SlotLive { fd },
    }
}

fn slot_of_counted(fd: RawFd) -> &'static Slot {
    table::global()
        .get(fd)
        .expect("fdlend: a counted fd has a slot, whose page is never freed")
}

/// Takes one reference to `(fd, epoch)`.
pub(crate) fn acquire(fd: RawFd, epoch: u32, taking: Taking) -> Result<Loan, LendError> {
    let slot = table::global().get(fd).ok_or(LendError::Closed { fd })?;
    slot.liveness
        .acquire(epoch, taking, slot.limit())
        .map(|()| Loan { fd, epoch })
        .map_err(|refusal| refusal_to_error(fd, refusal, slot))
}

/// Gives back `holder`'s reference to `(fd, epoch)`, finishing the close if it was
/// the last.
fn release(fd: RawFd, epoch: u32, holder: Holder) -> Released {
    let slot = slot_of_counted(fd);
    let released = slot.liveness.release(epoch, holder);
    if released == Released::Drained {
        close::finish_drained(slot, fd);
    }
    released
}

/// A counted loan of an fd: it stays open (its close deferred) until the last loan
/// is dropped. `Send + Sync + Clone`, `'static`, 8 bytes, no heap.
///
/// Cloning and dropping cost one uncontended atomic read-modify-write each, as
/// `Arc` does.
pub struct Loan {
    pub(crate) fd: RawFd,
    pub(crate) epoch: u32,
}

impl Loan {
    /// Another loan of the same file, or `Saturated` at the fd's loan limit. Works
    /// while the file is closing too: this loan keeps it open anyway.
    pub fn try_clone(&self) -> Result<Loan, LendError> {
        acquire(self.fd, self.epoch, Taking::Clone)
    }

    /// The incarnation this loan counts.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch)
    }

    /// A ticket for the same file.
    pub fn ticket(&self) -> Ticket {
        Ticket {
            fd: self.fd,
            epoch: self.epoch,
        }
    }

    /// False only after the owner's `close_now` revoked this loan's file.
    pub fn is_current(&self) -> bool {
        self.ticket().is_current()
    }

    /// Turns the loan into a raw token without returning its count; give it back
    /// with [`Loan::from_raw`] or [`return_fd`].
    pub fn into_raw(self) -> BorrowedFd<'static> {
        let fd = self.fd;
        std::mem::forget(self);
        // SAFETY: the count this loan held is now the token's (see SAFETY.md, raw
        // tokens); it keeps `fd` open until returned.
        unsafe { fd::borrow(fd) }
    }

    /// Rebuilds the loan that a raw token (from [`Loan::into_raw`] or
    /// [`Lender::lend_fd`](crate::Lender::lend_fd)) stands for, taking over its count.
    ///
    /// # Safety
    /// - `token` came from `Loan::into_raw` or `Lender::lend_fd` and its count has not
    ///   been returned yet (each token is returned exactly once, by `from_raw` or
    ///   [`return_fd`]).
    /// - The lender has not `close_now`ed the token's file since: the count would then
    ///   belong to whatever file reuses the number. Check [`is_current`] with the epoch
    ///   you recorded when in doubt.
    pub unsafe fn from_raw(token: BorrowedFd<'static>) -> Result<Loan, LendError> {
        let fd = token.as_raw_fd();
        let word = table::global().get(fd).map(|slot| slot.liveness.load());
        // While the owner's own reference is counted (Open, Closing) it is not a
        // loan: taking it would drop the count below the owner's.
        let lent = word.is_some_and(|word| match word.state() {
            State::Open | State::Closing => word.count() > 1,
            State::Orphaned => word.count() > 0,
            State::Free => false,
        });
        match word {
            Some(word) if lent => Ok(Loan {
                fd,
                epoch: word.epoch(),
            }),
            _ => Err(LendError::NotLent { fd }),
        }
    }
}

impl Clone for Loan {
    /// # Panics
    /// At the fd's loan limit (2^30 - 2 unless set lower with
    /// [`Lender::with_max_loans`](crate::Lender::with_max_loans)), as `Arc` aborts on
    /// overflow; use [`Loan::try_clone`] where the limit may be reached.
    fn clone(&self) -> Loan {
        self.try_clone()
            .unwrap_or_else(|error| panic!("Loan::clone: {error}"))
    }
}

impl Drop for Loan {
    fn drop(&mut self) {
        release(self.fd, self.epoch, Holder::Loan);
    }
}

impl AsFd for Loan {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: this loan's count keeps `fd` open for its lifetime (the only
        // exception is the owner's unsafe `close_now`, whose contract covers it).
        unsafe { fd::borrow(self.fd) }
    }
}

impl AsRawFd for Loan {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl fmt::Debug for Loan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Loan")
            .field("fd", &self.fd)
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// The owner's own counted reference, shared by `Rc` between its `Lender` and
/// `LocalLoan`s: the word counts it once however many local loans share it, and its
/// release tells the word that the owner is no longer counted.
pub(crate) struct OwnerRef {
    pub(crate) fd: RawFd,
    pub(crate) epoch: u32,
}

impl OwnerRef {
    pub(crate) fn new(fd: RawFd, epoch: u32) -> OwnerRef {
        OwnerRef { fd, epoch }
    }

    /// A new loan of the owner's file (`Taking::New`: refused once closing).
    pub(crate) fn loan(&self) -> Result<Loan, LendError> {
        acquire(self.fd, self.epoch, Taking::New)
    }

    pub(crate) fn ticket(&self) -> Ticket {
        Ticket::new(self.fd, self.epoch)
    }
}

impl Drop for OwnerRef {
    fn drop(&mut self) {
        release(self.fd, self.epoch, Holder::Owner);
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
    pub(crate) fn new(shared: Rc<OwnerRef>) -> LocalLoan {
        LocalLoan { shared }
    }

    /// A counted loan of the same file, for another thread (one atomic operation).
    /// Works while the file is closing too, as [`Loan::try_clone`] does.
    pub fn to_send(&self) -> Result<Loan, LendError> {
        acquire(self.shared.fd, self.shared.epoch, Taking::Clone)
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

/// A claim on a file that holds nothing open: `Copy`, `Send`, 8 bytes, free to make
/// and to drop. [`Ticket::pin`] turns it into a [`Loan`] only if the file is still
/// open and still the same incarnation.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Ticket {
    fd: RawFd,
    epoch: u32,
}

impl Ticket {
    pub(crate) fn new(fd: RawFd, epoch: u32) -> Ticket {
        Ticket { fd, epoch }
    }

    /// A loan of the ticket's file, or why not: `Closing`, `Closed` (the number is
    /// free), `Stale` (the number names another file now), `Saturated`.
    pub fn pin(&self) -> Result<Loan, LendError> {
        acquire(self.fd, self.epoch, Taking::New)
    }

    /// True while the ticket's file is open or draining.
    pub fn is_current(&self) -> bool {
        table::global().get(self.fd).is_some_and(|slot| {
            let word = slot.liveness.load();
            word.epoch() == self.epoch && word.state() != State::Free
        })
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
    let word = table::global().get(fd.as_raw_fd())?.liveness.load();
    (word.state() != State::Free).then_some(Epoch(word.epoch()))
}

/// True while `(fd, epoch)` names a file that is lent and not yet closed: the check
/// a raw token's holder makes before trusting it.
pub fn is_current(fd: BorrowedFd<'_>, epoch: Epoch) -> bool {
    Ticket::new(fd.as_raw_fd(), epoch.0).is_current()
}

/// Returns the count of a raw token from [`Lender::lend_fd`](crate::Lender::lend_fd)
/// or [`Loan::into_raw`]. If it was the last loan of a closing file, the close
/// happens here.
///
/// Returns `NotLent` when the fd's number has nothing lent (a token returned twice,
/// or never lent) — where fdlend can see it; it cannot see every misuse.
///
/// # Safety
/// - `token` came from `Lender::lend_fd` or `Loan::into_raw` and has not been
///   returned yet: each token is returned exactly once.
/// - The token is not used after this call.
/// - The lender has not `close_now`ed the token's file since it was lent (otherwise
///   this would return a count of whatever file now has the number); check
///   [`is_current`] with the epoch recorded at lending time when that can happen.
pub unsafe fn return_fd(token: BorrowedFd<'static>) -> Result<(), LendError> {
    // SAFETY: the caller's contract is exactly `from_raw`'s; dropping the loan
    // returns the count.
    drop(unsafe { Loan::from_raw(token) }?);
    Ok(())
}
