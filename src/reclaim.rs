//! Waiting for the loans to come back and taking the fd (`Reclaim`, and
//! `CloseFuture`, which closes it), or, if the owner stops waiting before they are
//! back, taking the file back to lending (`revert`: the bounded waits).
//!
//! Above `close` (the signal the drainer uses) and `record` (the word a revert
//! reopens); the public `abort`s that wrap `revert` into a `Lender` are in
//! `bounded.rs`.

use crate::close::{close_owned, is_drained, CloseSignal};
use crate::error::LendError;
use crate::fd;
use crate::loan::OwnerRef;
use crate::record::Record;
use crate::sync::Arc;
use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

/// [`Lender::reclaim`](crate::Lender::reclaim): resolves to the fd itself, unclosed,
/// once every loan is back; woken by the thread that returns the last one, whatever
/// runtime (if any) polls it.
///
/// Polled (or waited for) on the owner's thread while its local loans are alive, it
/// resolves to `LendError::LocalLoansOutstanding` instead of never: the close is
/// then handed to the last local loan.
///
/// Dropped before it resolves, it hands the close to the last loan (or closes at once
/// if they are already back): the fd is never leaked. To stop waiting *and keep the
/// file*, [`abort`](Reclaim::abort) it instead (race it against your runtime's timer
/// for a bounded wait).
#[must_use = "futures do nothing unless polled; dropping it defers the close"]
pub struct Reclaim {
    state: ReclaimState,
}

/// What a waiting close keeps of its owner: enough to wait for the drain, or to
/// hand the owner back if it stops waiting first.
struct Parked {
    record: &'static Record,
    fd: RawFd,
    epoch: u64,
    /// `Closer::Owner`: says when the loans are back, and then `fd` is ours.
    signal: Arc<CloseSignal>,
}

enum ReclaimState {
    /// Loans are out.
    Waiting(Parked),
    /// Nothing was lent: the fd is ours already.
    Ready(OwnedFd),
    /// Handed out.
    Done,
}

/// How a waiting close that stops waiting ends (see `Reclaim::revert`).
pub(crate) enum Reverted {
    /// The file is lent again; this is the owner's counted reference.
    Reopened(OwnerRef),
    /// Too late or not possible: what the wait would have resolved to.
    Finished(Result<OwnedFd, LendError>),
}

impl Reclaim {
    /// Waits on `signal`, which must be `Closer::Owner`, for the owner's file, whose
    /// reference `owner` the caller is giving up (after this call).
    pub(crate) fn waiting(owner: &OwnerRef, signal: Arc<CloseSignal>) -> Reclaim {
        Reclaim {
            state: ReclaimState::Waiting(Parked {
                record: owner.record,
                fd: owner.fd,
                epoch: owner.epoch,
                signal,
            }),
        }
    }

    /// Already resolved: nothing was lent.
    pub(crate) fn ready(fd: OwnedFd) -> Reclaim {
        Reclaim {
            state: ReclaimState::Ready(fd),
        }
    }

    /// Takes the fd once its loans are back (the caller checked the signal).
    fn take(&mut self) -> OwnedFd {
        match std::mem::replace(&mut self.state, ReclaimState::Done) {
            // SAFETY: drained with `Closer::Owner`, so the drainer left the fd to this
            // owner alone; `Done` keeps it from being handed out or closed twice.
            ReclaimState::Waiting(parked) => unsafe { OwnedFd::from_raw_fd(parked.fd) },
            ReclaimState::Ready(fd) => fd,
            ReclaimState::Done => panic!("Reclaim polled after completion"),
        }
    }

    /// Blocks until every loan is back; the fd.
    pub(crate) fn wait(self) -> Result<OwnedFd, LendError> {
        match self.wait_deadline(None) {
            Ok(result) => result,
            Err(_) => unreachable!("a wait without a deadline ends only when done"),
        }
    }

    /// As `wait`, giving up at `deadline` (`None`: never): then the still waiting
    /// `Reclaim` comes back.
    pub(crate) fn wait_deadline(
        mut self,
        deadline: Option<Instant>,
    ) -> Result<Result<OwnedFd, LendError>, Reclaim> {
        if let ReclaimState::Waiting(parked) = &self.state {
            // On an error, dropping `self` hands the close to the last local loan.
            match parked.signal.wait_until_deadline(is_drained, deadline) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(self),
                Err(error) => return Ok(Err(error)),
            }
        }
        Ok(Ok(self.take()))
    }

    /// Stops waiting, taking the file back to lending if its loans have not drained
    /// yet (see `Liveness::reopen`: exactly one of this and the drain wins).
    ///
    /// # Panics
    /// If the wait already resolved (as polling it again would).
    pub(crate) fn revert(mut self) -> Reverted {
        let parked = match std::mem::replace(&mut self.state, ReclaimState::Done) {
            ReclaimState::Waiting(parked) => parked,
            ReclaimState::Ready(fd) => return Reverted::Finished(Ok(fd)),
            ReclaimState::Done => panic!("Reclaim aborted after completion"),
        };
        let Parked {
            record,
            fd,
            epoch,
            signal,
        } = parked;
        match record.liveness.reopen() {
            Ok(()) => {
                // The reopen won: no drain will take this signal, and a later close
                // must not find it. (Its waker, if any, drops with our `signal` below,
                // with no lock held.)
                record.leave_signal(None);
                drop(signal);
                return Reverted::Reopened(OwnerRef::new(record, fd, epoch));
            }
            // Local loans still share the owner's reference: the owner cannot be
            // rebuilt apart from them. Their last one closes, as if dropped.
            Err(word) if word.counts_owner() => {
                if !signal.abandon() {
                    return Reverted::Finished(Err(LendError::LocalLoansOutstanding {
                        fd,
                        count: signal.local_loans,
                    }));
                }
                // Drained meanwhile: the fd is ours after all (below).
            }
            // The count reached zero: the drain is claimed, or bound to be by a
            // release in flight (no new reference can be admitted while closing), and
            // only fdlend code runs until its `drained`. Wait for that.
            Err(_) => {
                let drained = signal.wait_until(is_drained);
                debug_assert!(drained.is_ok(), "no local loan is alive: {drained:?}");
            }
        }
        // SAFETY: drained with `Closer::Owner` (an `abandon` that found it drained
        // leaves the close to us too), and the state is `Done`: this owner's only
        // use of the fd.
        Reverted::Finished(Ok(unsafe { OwnedFd::from_raw_fd(fd) }))
    }
}

impl Future for Reclaim {
    type Output = Result<OwnedFd, LendError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let ReclaimState::Waiting(parked) = &self.state {
            match parked.signal.poll_until(cx, is_drained) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(error)) => {
                    if let ReclaimState::Waiting(parked) =
                        std::mem::replace(&mut self.state, ReclaimState::Done)
                    {
                        // Not drained (that would have been Ok), so the last local loan
                        // closes from now on.
                        let drained = parked.signal.abandon();
                        debug_assert!(!drained, "refused only while lent");
                    }
                    return Poll::Ready(Err(error));
                }
                Poll::Ready(Ok(_)) => {}
            }
        }
        Poll::Ready(Ok(self.take()))
    }
}

impl Drop for Reclaim {
    fn drop(&mut self) {
        // A `Ready` fd closes with its `OwnedFd`; a waiting one is handed to the last
        // loan, or closed here if the loans are already back.
        if let ReclaimState::Waiting(parked) = &self.state {
            if parked.signal.abandon() {
                // SAFETY: drained with `Closer::Owner` and never handed out, so the
                // close is still this owner's, once.
                let _ = unsafe { fd::close(parked.fd) };
            }
        }
    }
}

impl std::fmt::Debug for Reclaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waiting = matches!(self.state, ReclaimState::Waiting { .. });
        f.debug_struct("Reclaim")
            .field("waiting", &waiting)
            .finish_non_exhaustive()
    }
}

/// [`Lender::close_async`](crate::Lender::close_async): a [`Reclaim`] that closes the
/// fd on the polling thread once every loan is back, and resolves to the `close(2)`
/// result. Dropped early, it defers the close to the last loan;
/// [`abort`](CloseFuture::abort) it to stop waiting and keep lending.
#[must_use = "futures do nothing unless polled; dropping it defers the close"]
#[derive(Debug)]
pub struct CloseFuture {
    pub(crate) reclaim: Reclaim,
}

impl CloseFuture {
    pub(crate) fn new(reclaim: Reclaim) -> CloseFuture {
        CloseFuture { reclaim }
    }
}

impl Future for CloseFuture {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.reclaim)
            .poll(cx)
            .map(|fd| close_owned(fd?))
    }
}
