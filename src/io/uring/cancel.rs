//! Cancel-then-close: how a closing thread reaches every ring's thread.
//!
//! Rings are per thread and `!Send`, so the closer cannot touch them. Each [`Ring`]
//! has an inbox (a mutex-guarded queue) listed in a process-wide registry, and an
//! eventfd whose read the ring keeps armed as one of its own ops. The closer puts a
//! request in every live inbox and writes each eventfd: a ring thread blocked in
//! `submit_and_wait` wakes on that read's CQE, and its next [`Ring::reap`] serves
//! the inbox: one `IORING_OP_ASYNC_CANCEL` with `IORING_ASYNC_CANCEL_FD |
//! IORING_ASYNC_CANCEL_ALL` for the file's fd (which matches plain *and* fixed-file
//! ops, as both resolve to the same `struct file`), and the file's fixed slots are
//! revoked and unregistered. When the cancel's own CQE is reaped the ring answers.
//! Cancelled ops complete with `-ECANCELED` to their owners like any op, and their
//! loans return as they are reaped; the closer then closes with `close_wait`.
//!
//! Only io_uring ops can be cancelled: a std thread blocked in `pread(2)` on the
//! file cannot be interrupted, and its loan keeps `close_wait` waiting until the
//! call returns by itself. A ring whose thread never reaps again never answers.

use super::requests::{ask_every_ring, withdraw_everywhere, CancelRequest, RINGS_HERE};
use super::ring::Ring;
use crate::Lender;
use std::cell::Cell;
use std::fmt;
use std::io;
use std::sync::Arc;

impl Ring {
    /// Cancel-then-close from the thread that owns this ring (a thread-per-core
    /// owner usually has one): asks every other ring as [`cancel_in_flight`]
    /// does, cancels this ring's ops on the file itself, and reaps this ring (CQEs
    /// that are not fdlend's go to `foreign`; other closers' requests are
    /// answered meanwhile, so owners cancelling at once do not wait for each other)
    /// until every ring has answered; then starts a deferred
    /// [`close`](Lender::close): the file closes when the last cancelled op's loan
    /// returns, which for this ring's ops happens as you keep reaping. Refused if
    /// this thread owns another `Ring`, which could not answer while this one waits.
    pub fn cancel_then_close(
        &mut self,
        lender: Lender,
        mut foreign: impl FnMut(io_uring::cqueue::Entry),
    ) -> Result<(Cancelled, crate::Closing), RingOnThisThread<Lender>> {
        if RINGS_HERE.with(Cell::get) > 1 {
            return Err(RingOnThisThread(lender));
        }
        let own = Arc::clone(&self.mailbox.inbox);
        let request = CancelRequest::new(&lender, Some(Arc::clone(&own)));
        request
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting_for = 1;
        ask_every_ring(&request, Some(&own));
        self.serve_request(Arc::clone(&request));
        // Reap while waiting, so this ring answers other closers meanwhile; the
        // last answer nudges it.
        while request.waiting_for() > 0 {
            match self.submit_and_wait(1) {
                Err(e) if e.kind() != io::ErrorKind::Interrupted => break,
                _ => {}
            }
            self.reap(&mut foreign);
        }
        Ok((Cancelling { request }.wait(), lender.close()))
    }
}

/// The closer's view of a cancel in progress. See [`cancel_in_flight`].
pub struct Cancelling {
    request: Arc<CancelRequest>,
}

/// What a cancel did, once every ring answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled {
    /// Rings that answered (every ring alive when the cancel was sent).
    pub rings: usize,
    /// Ops the kernel cancelled on them by the time they answered (each completes
    /// with `-ECANCELED`): a lower bound, as a send missed between its two splices
    /// is cancelled later by a retry that is not counted.
    pub cancelled: usize,
}

impl Cancelling {
    /// Blocks until every ring has reaped its cancel's CQE.
    pub fn wait(self) -> Cancelled {
        let mut tally = self.request.state.lock().unwrap_or_else(|e| e.into_inner());
        while tally.waiting_for > 0 {
            tally = self
                .request
                .answered
                .wait(tally)
                .unwrap_or_else(|e| e.into_inner());
        }
        Cancelled {
            rings: tally.rings,
            cancelled: tally.cancelled,
        }
    }
}

impl Drop for Cancelling {
    /// Withdraws the request: rings that have not picked it up never will, and
    /// those serving it answer as before; its loan goes at the last answer, so a
    /// dropped cancel never reaches a later file on the same number.
    fn drop(&mut self) {
        {
            let mut tally = self.request.tally();
            if tally.waiting_for == 0 {
                return;
            }
            tally.withdrawn = true;
        }
        let left = withdraw_everywhere(&self.request);
        self.request.no_longer_waiting_for(left);
    }
}

impl fmt::Debug for Cancelling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancelling")
            .field("fd", &self.request.file.fd)
            .field("epoch", &self.request.file.epoch)
            .finish()
    }
}

/// Cancel-then-close was refused: this thread owns a [`Ring`], which could not
/// serve the request while this thread waits. The lender comes back untouched.
#[derive(Debug)]
pub struct RingOnThisThread<T>(pub T);

impl<T> fmt::Display for RingOnThisThread<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            "this thread owns an io_uring Ring that could not serve the cancel while it waits; cancel from a thread without one",
        )
    }
}

impl<T: fmt::Debug> std::error::Error for RingOnThisThread<T> {}

/// Asks every live [`Ring`] of the process to cancel its in-flight ops on
/// `lender`'s file (`IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL`) and to
/// revoke the file's fixed slots. Returns at once; [`Cancelling::wait`] blocks
/// until every ring answered. Ops pushed after a ring answered are not cancelled.
///
/// The request names the file by identity and holds one loan of it until every
/// ring has answered (so `close_wait` waits for that too). Dropping the
/// [`Cancelling`] withdraws it: rings that have not picked it up never act on it,
/// and its loan returns as soon as those already serving it answer.
pub fn cancel_in_flight(lender: &Lender) -> Result<Cancelling, RingOnThisThread<()>> {
    if RINGS_HERE.with(Cell::get) > 0 {
        return Err(RingOnThisThread(()));
    }
    let request = CancelRequest::new(lender, None);
    ask_every_ring(&request, None);
    Ok(Cancelling { request })
}

/// Cancels every fdlend io_uring op on `lender`'s file on every ring, waits for
/// the rings to answer, then [`close_wait`](Lender::close_wait)s: the cancelled
/// ops' loans return as their owners reap their `-ECANCELED` CQEs. Refused (the
/// lender handed back) on a thread that owns a [`Ring`].
pub fn cancel_then_close(
    lender: Lender,
) -> Result<(Cancelled, io::Result<()>), RingOnThisThread<Lender>> {
    let cancelling = match cancel_in_flight(&lender) {
        Ok(cancelling) => cancelling,
        Err(RingOnThisThread(())) => return Err(RingOnThisThread(lender)),
    };
    let cancelled = cancelling.wait();
    Ok((cancelled, lender.close_wait()))
}
