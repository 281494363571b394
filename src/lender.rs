//! The owner of a lent fd: registers it, hands out loans and tickets, and closes it
//! in whichever of the close modes the caller picks, exactly once.

use crate::close::{self, to_io, CloseSignal, Closer, Closing};
use crate::error::{LendError, RegisterError};
use crate::fd;
use crate::liveness;
use crate::loan::{Epoch, Loan, LocalLoan, OwnerRef, Ticket};
use crate::raw::RawLoan;
use crate::reclaim::{CloseFuture, Reclaim};
use crate::sync::Arc;
use crate::table;
use std::fmt;
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::Rc;

/// The owner of a lent fd. Lives on its owner's thread (`!Send`): that is what lets
/// [`LocalLoan`]s cost no atomic operation.
///
/// Dropping it is a deferred close: the fd closes now if nothing is lent, otherwise
/// when the last loan returns. See the `close*` methods for the other modes.
pub struct Lender {
    /// The owner's counted reference, shared with every `LocalLoan`. Taken out once,
    /// by `take_owner` (which then forgets the `Lender`) or by `Drop`; a plain field
    /// rather than an `Option` so that `local_loan()` is a bare `Rc` clone, with no
    /// check of its own.
    owner: ManuallyDrop<Rc<OwnerRef>>,
}

impl Lender {
    /// The most loans one fd can have outstanding (2^30 - 2).
    pub const MAX_LOANS: u32 = liveness::MAX_LOANS;

    /// Takes ownership of `fd` and starts lending it.
    ///
    /// Refused, with `fd` handed back, when the fd is not open (`InvalidFd`), its
    /// number is beyond what fdlend tracks (`OutOfRange`), another `Lender` already
    /// lends that number (`SlotLive`: someone closed it behind that lender's back), or
    /// the number has used up its 2^64 incarnations (`Exhausted`).
    pub fn new(fd: OwnedFd) -> Result<Lender, RegisterError> {
        Self::with_max_loans(fd, Self::MAX_LOANS)
    }

    /// As [`Lender::new`], with at most `max_loans` loans (and raw tokens) out at
    /// once; more are refused with `Saturated`. Local loans share the owner's count
    /// and are not limited.
    pub fn with_max_loans(fd: OwnedFd, max_loans: u32) -> Result<Lender, RegisterError> {
        let raw = fd.as_raw_fd();
        if nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
            return Err(RegisterError::new(LendError::InvalidFd { fd: raw }, fd));
        }
        let (record, epoch) = match table::global().register(raw, max_loans.min(Self::MAX_LOANS)) {
            Ok(registered) => registered,
            Err(error) => return Err(RegisterError::new(error, fd)),
        };
        // The fd now belongs to this incarnation's record; `fd::close` ends it.
        let raw = fd.into_raw_fd();
        Ok(Lender {
            owner: ManuallyDrop::new(Rc::new(OwnerRef::new(record, raw, epoch))),
        })
    }

    /// The owner again, from its reference taken back by a bounded close.
    pub(crate) fn from_owner(owner: OwnerRef) -> Lender {
        Lender {
            owner: ManuallyDrop::new(Rc::new(owner)),
        }
    }

    #[inline]
    fn owner(&self) -> &Rc<OwnerRef> {
        &self.owner
    }

    /// A counted loan for any thread (one atomic operation). Refused with
    /// `Saturated` at the loan limit.
    #[inline]
    pub fn loan(&self) -> Result<Loan, LendError> {
        self.owner().loan()
    }

    /// A loan for this thread that costs no atomic operation.
    #[inline]
    pub fn local_loan(&self) -> LocalLoan {
        LocalLoan::new(Rc::clone(self.owner()))
    }

    /// A ticket: holds nothing open; [`Ticket::pin`] it when the file is needed.
    pub fn ticket(&self) -> Ticket {
        self.owner().ticket()
    }

    /// Counts one loan and hands out the fd itself as a raw token, for APIs that
    /// want a plain `BorrowedFd` (io_uring submissions, FFI).
    ///
    /// # Safety
    /// - The token is given back exactly once, with [`return_fd`](crate::return_fd),
    ///   and is not used after that.
    /// - Its `'static` lifetime is a lie bounded by the count: nothing may use the
    ///   token (or copies of it) after it is returned, nor after this lender's
    ///   [`close_now`](Lender::close_now). Closure ordering is the caller's.
    ///
    /// [`Lender::lend_raw`] is the checked form: its token knows its file.
    #[inline]
    pub unsafe fn lend_fd(&self) -> Result<BorrowedFd<'static>, LendError> {
        let owner = self.owner();
        crate::raw::count_raw(owner.record)?;
        // SAFETY: the raw token just counted keeps `fd` open until the caller gives it
        // back (contract above).
        Ok(unsafe { fd::borrow(owner.fd) })
    }

    /// Counts one loan as a raw token that names its file: give it back with
    /// [`return_raw`](crate::return_raw) or [`Loan::from_raw`], which refuse a stale
    /// or unlent token with a typed error.
    #[inline]
    pub fn lend_raw(&self) -> Result<RawLoan, LendError> {
        RawLoan::lend(self.owner().record)
    }

    /// This file's incarnation; record it beside raw tokens to check them later with
    /// [`is_current`](crate::is_current).
    pub fn epoch(&self) -> Epoch {
        Epoch(self.owner().epoch)
    }

    /// Loans, raw tokens and local loans outstanding right now.
    pub fn outstanding(&self) -> usize {
        let shared = self.owner().record.liveness.load().loans() as usize;
        shared + self.outstanding_local()
    }

    /// The most loans this fd may have out at once.
    pub fn max_loans(&self) -> u32 {
        self.owner().record.max_loans()
    }

    fn take_owner(self) -> Rc<OwnerRef> {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `this` is never dropped, so `Lender::drop` never sees this owner, and
        // `self` was moved in: nothing else can take it again.
        unsafe { ManuallyDrop::take(&mut this.owner) }
    }

    /// Deferred close: the fd closes now if nothing is lent, otherwise on the thread
    /// of the last returning loan. New loans and ticket pins are refused from now on.
    /// The returned handle reports the `close(2)` result (and is a future of it).
    pub fn close(self) -> Closing {
        match retire(self.take_owner()) {
            // SAFETY: `retire` killed the word, handing the fd to us alone.
            Ok(fd) => Closing::done(unsafe { fd::close(fd) }),
            Err(owner) => {
                let signal = CloseSignal::new(Closer::LastLoan, owner.fd, local_loans(&owner));
                begin_close(owner, Some(Arc::clone(&signal)));
                Closing::pending(signal)
            }
        }
    }

    /// Blocks until every loan is back, then closes the fd on this thread and returns
    /// the `close(2)` result (never retried on `EINTR`).
    ///
    /// Local loans still alive on this thread could never come back while it blocks,
    /// so then the close is deferred to the last of them and
    /// `LendError::LocalLoansOutstanding` is returned (as an `io::Error`; see
    /// [`LendError::from_io`]). A thread that holds a [`Loan`] of this file itself
    /// would wait forever too: fdlend cannot see that one. A loan that may never come
    /// back (leaked with a task, held by a stuck thread) would block it forever:
    /// [`close_wait_timeout`](Lender::close_wait_timeout) hands the lender back instead.
    pub fn close_wait(self) -> io::Result<()> {
        match self.reclaim_wait() {
            Ok(fd) => close::close_owned(fd),
            Err(lender) => {
                let (fd, count) = (lender.as_raw_fd(), lender.outstanding_local());
                drop(lender);
                Err(LendError::LocalLoansOutstanding { fd, count }.into())
            }
        }
    }

    /// As [`close_wait`](Lender::close_wait), as a `Future`: it resolves once every
    /// loan is back, woken by the thread that returns the last one, and closes the
    /// fd on the thread that polls it. Needs no particular runtime. Polled on this
    /// thread while local loans are alive here, it resolves to
    /// `LocalLoansOutstanding` (the last local loan closes).
    pub fn close_async(self) -> CloseFuture {
        CloseFuture::new(self.reclaim())
    }

    /// Stops lending and resolves to the fd itself, unclosed, once every loan is back
    /// (new loans and pins are refused meanwhile; tickets turn stale). For owners
    /// whose fd must be closed by something else, such as a runtime's file type.
    pub fn reclaim(self) -> Reclaim {
        match self.into_owned_fd() {
            Ok(fd) => Reclaim::ready(fd),
            Err(lender) => {
                let owner = lender.take_owner();
                let signal = CloseSignal::new(Closer::Owner, owner.fd, local_loans(&owner));
                let reclaim = Reclaim::waiting(&owner, Arc::clone(&signal));
                begin_close(owner, Some(signal));
                reclaim
            }
        }
    }

    /// Blocks until every loan is back and returns the fd, unclosed. Hands the lender
    /// back untouched if local loans are alive on this thread, since they could never
    /// return while it blocks.
    pub fn reclaim_wait(self) -> Result<OwnedFd, Lender> {
        if self.outstanding_local() > 0 {
            return Err(self);
        }
        match self.reclaim().wait() {
            Ok(fd) => Ok(fd),
            Err(error) => unreachable!("no local loan is alive, yet {error}"),
        }
    }

    pub(crate) fn outstanding_local(&self) -> usize {
        local_loans(self.owner())
    }

    /// Closes now if nothing is lent and returns the `close(2)` result; otherwise
    /// hands the lender back untouched.
    pub fn try_close(self) -> Result<io::Result<()>, Lender> {
        self.into_owned_fd().map(close::close_owned)
    }

    /// Takes the fd back if nothing is lent (every ticket turns stale); otherwise
    /// hands the lender back untouched.
    pub fn into_owned_fd(self) -> Result<OwnedFd, Lender> {
        match retire(self.take_owner()) {
            // SAFETY: `retire` killed the word, so nothing else counts or closes `fd`;
            // the `OwnedFd` is its only owner from here.
            Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(owner) => Err(Lender {
                owner: ManuallyDrop::new(owner),
            }),
        }
    }

    /// Closes the fd now, whatever is lent. The file's record is revoked and
    /// detached from the fd number: tickets pin as `Closed` (or `Stale` once the
    /// number is lent again), `RawLoan`s are refused as stale, outstanding loans
    /// count down on the detached record only, so dropping them never touches a
    /// later file under the same number; cloning a revoked loan panics (`try_clone`
    /// says `Stale`/`Closed`).
    ///
    /// # Safety
    /// After this call nothing uses the fd through this lender's handles: no
    /// [`Loan`], [`LocalLoan`], `SharedLoan`, `LentRegion` or raw token of this file
    /// does I/O (or makes a `BorrowedFd` that does), no io_uring SQE that names the fd
    /// is still to be submitted or in flight, and no ticket is being pinned
    /// concurrently with this call (a pin that wins the race gets a loan of the fd
    /// being closed). The fd number may name another file a moment later. Dropping
    /// the handles is fine.
    pub unsafe fn close_now(self) -> io::Result<()> {
        let owner = self.take_owner();
        let fd = owner.fd;
        owner.record.liveness.revoke();
        // Before the close, so the number's next registration gets a fresh record.
        table::global().detach(fd, owner.record);
        // Local loans may keep this `Rc` alive; their release counts down the
        // revoked record.
        drop(owner);
        // SAFETY: the record is revoked, so no drain will close `fd`; the caller
        // promises no handle uses it afterwards.
        to_io(unsafe { fd::close(fd) })
    }
}

/// Local loans sharing the owner's reference.
fn local_loans(owner: &Rc<OwnerRef>) -> usize {
    Rc::strong_count(owner) - 1
}

/// The fast path of every close: if the owner holds the only reference (no loans,
/// tokens or local loans), free the slot in one step and return the fd, now owned
/// by the caller alone.
fn retire(owner: Rc<OwnerRef>) -> Result<RawFd, Rc<OwnerRef>> {
    if Rc::strong_count(&owner) != 1 || owner.record.liveness.retire_if_unlent().is_err() {
        return Err(owner);
    }
    let owner = Rc::into_inner(owner).expect("strong count was 1 and no Weak exists");
    let fd = owner.fd;
    // The count this loan held was taken out of the word by `retire_if_unlent`.
    std::mem::forget(owner);
    Ok(fd)
}

/// The slow path: leave `signal` (who closes, who is told) in the record, turn the
/// word `Closing`, and give up the owner's reference. If that was the last, the drain
/// happens right here.
fn begin_close(owner: Rc<OwnerRef>, signal: Option<Arc<CloseSignal>>) {
    // Left before the owner's reference is released (its Release orders this store
    // before the drain), so the drainer finds it.
    owner.record.leave_signal(signal);
    owner.record.liveness.begin_close();
    drop(owner);
}

impl Drop for Lender {
    fn drop(&mut self) {
        // SAFETY: drop runs once, and never for a `Lender` whose owner `take_owner`
        // took (it forgets the `Lender`); the field is not used after this.
        let owner = unsafe { ManuallyDrop::take(&mut self.owner) };
        match retire(owner) {
            // SAFETY: `retire` killed the word, handing the fd to us alone.
            Ok(fd) => drop(unsafe { fd::close(fd) }),
            Err(owner) => begin_close(owner, None),
        }
    }
}

impl AsFd for Lender {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.owner().as_fd()
    }
}

impl AsRawFd for Lender {
    fn as_raw_fd(&self) -> RawFd {
        self.owner().fd
    }
}

impl TryFrom<OwnedFd> for Lender {
    type Error = RegisterError;

    fn try_from(fd: OwnedFd) -> Result<Lender, RegisterError> {
        Lender::new(fd)
    }
}

impl TryFrom<File> for Lender {
    type Error = RegisterError;

    fn try_from(file: File) -> Result<Lender, RegisterError> {
        Lender::new(file.into())
    }
}

impl fmt::Debug for Lender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lender")
            .field("fd", &self.owner.fd)
            .field("epoch", &self.owner.epoch)
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    fn pipe() -> (File, File) {
        let (read, write) = nix::unistd::pipe().unwrap();
        (File::from(read), File::from(write))
    }

    #[test]
    fn the_last_loan_closes_a_dropped_lender() {
        let (mut read, write) = pipe();
        let lender = Lender::try_from(write).unwrap();
        let loan = lender.loan().unwrap();
        drop(lender);
        (&File::from(loan.as_fd().try_clone_to_owned().unwrap()))
            .write_all(b"x")
            .unwrap();
        drop(loan);
        // Plain reads, not read_to_end: that seeks for a size hint, which Miri's
        // emulated pipes refuse, and this test should run under Miri too.
        let mut seen = [0; 2];
        assert_eq!(read.read(&mut seen).unwrap(), 1);
        assert_eq!(&seen[..1], b"x");
        assert_eq!(
            read.read(&mut seen).unwrap(),
            0,
            "EOF: the dup above and the loan are both gone"
        );
    }

    #[test]
    fn local_loans_share_the_owners_count() {
        let (_read, write) = pipe();
        let lender = Lender::try_from(write).unwrap();
        let locals: Vec<LocalLoan> = (0..3).map(|_| lender.local_loan()).collect();
        assert_eq!(
            lender.owner().record.liveness.load().count(),
            1,
            "no atomic was counted"
        );
        assert_eq!(lender.outstanding(), 3);
        let sent = locals[0].to_send().unwrap();
        assert_eq!(lender.outstanding(), 4);
        drop(sent);
        drop(locals);
        assert!(lender.try_close().is_ok());
    }

    #[test]
    fn a_closing_lender_refuses_tickets_and_the_last_local_loan_closes() {
        let (_read, write) = pipe();
        let lender = Lender::try_from(write).unwrap();
        let ticket = lender.ticket();
        let local = lender.local_loan();
        let closing = lender.close();
        assert_eq!(
            ticket.pin().unwrap_err(),
            LendError::Closing { fd: ticket.fd() }
        );
        assert!(!closing.is_closed());
        drop(local);
        assert!(closing.wait().is_ok());
        assert_eq!(
            ticket.pin().unwrap_err(),
            LendError::Closed { fd: ticket.fd() }
        );
    }

    #[test]
    fn close_wait_with_local_loans_defers_and_says_so() {
        let (_read, write) = pipe();
        let lender = Lender::try_from(write).unwrap();
        let ticket = lender.ticket();
        let local = lender.local_loan();
        let error = lender.close_wait().unwrap_err();
        let inner = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<LendError>())
            .copied();
        assert_eq!(
            inner,
            Some(LendError::LocalLoansOutstanding {
                fd: ticket.fd(),
                count: 1
            })
        );
        assert!(ticket.is_current(), "still open for the local loan");
        drop(local);
        assert!(!ticket.is_current());
    }

    #[test]
    fn saturation_is_refused_and_costs_nothing() {
        let (_read, write) = pipe();
        let lender = Lender::with_max_loans(write.into(), 2).unwrap();
        let loans = [lender.loan().unwrap(), lender.loan().unwrap()];
        let fd = lender.as_raw_fd();
        assert_eq!(
            lender.loan().unwrap_err(),
            LendError::Saturated { fd, limit: 2 }
        );
        assert_eq!(
            loans[0].try_clone().unwrap_err(),
            LendError::Saturated { fd, limit: 2 }
        );
        assert_eq!(lender.outstanding(), 2);
        drop(loans);
        assert!(lender.try_close().is_ok());
    }
}
