//! Bounded waits: every waiting close mode with a deadline. A wait that runs out of
//! time hands the owner back, lending again, with how many loans are still out
//! ([`TimedOut`]); nothing is closed or lost.
//!
//! The blocking forms wait on the close signal until the deadline; the async forms
//! are aborted by their caller (who races them against a runtime's timer, since
//! fdlend has none). Either way the file is taken back by `Reclaim::revert`, which
//! reopens the liveness word unless its drain has been claimed: then the wait's own
//! outcome is returned instead.

use crate::close::close_owned;
use crate::error::{LendError, TimedOut};
use crate::lender::Lender;
use crate::reclaim::{CloseFuture, Reclaim, Reverted};
use crate::sharded::ShardedLender;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

impl Lender {
    /// As [`close_wait`](Lender::close_wait), for at most `timeout`: if loans are
    /// still out then, the lender comes back in [`TimedOut`], lending again (new
    /// loans and ticket pins are admitted once more), and nothing was closed.
    ///
    /// With local loans alive on this thread it does what `close_wait` does: defers
    /// the close to the last of them and returns `LocalLoansOutstanding` at once.
    pub fn close_wait_timeout(self, timeout: Duration) -> Result<io::Result<()>, TimedOut<Lender>> {
        if self.outstanding_local() > 0 {
            return Ok(self.close_wait());
        }
        self.reclaim_wait_timeout(timeout).map(close_owned)
    }

    /// As [`reclaim_wait`](Lender::reclaim_wait), for at most `timeout`: the fd,
    /// unclosed, once every loan is back; if loans are still out at the deadline, the
    /// lender comes back in [`TimedOut`], lending again.
    ///
    /// With local loans alive on this thread it hands the lender back at once, as
    /// `reclaim_wait` does: they could not return before any deadline.
    pub fn reclaim_wait_timeout(self, timeout: Duration) -> Result<OwnedFd, TimedOut<Lender>> {
        if self.outstanding_local() > 0 {
            return Err(timed_out(self));
        }
        // A deadline beyond what `Instant` holds is no deadline.
        let deadline = Instant::now().checked_add(timeout);
        match self.reclaim().wait_deadline(deadline) {
            Ok(Ok(fd)) => Ok(fd),
            Ok(Err(error)) => unreachable!("no local loan is alive, yet {error}"),
            Err(reclaim) => match reclaim.abort() {
                Ok(lender) => Err(timed_out(lender)),
                Err(Ok(fd)) => Ok(fd),
                Err(Err(error)) => unreachable!("no local loan is alive, yet {error}"),
            },
        }
    }
}

fn timed_out(lender: Lender) -> TimedOut<Lender> {
    let (fd, outstanding) = (lender.as_raw_fd(), lender.outstanding());
    TimedOut::new(lender, fd, outstanding)
}

impl Reclaim {
    /// Stops waiting. `Ok(lender)` if the loans were not all back yet: the file is
    /// lent again (new loans and ticket pins admitted, tickets current again) and
    /// nothing was closed. Otherwise what the future resolves to now: the fd if they
    /// were back (exactly one of the two, however a last loan's return races this),
    /// or `LocalLoansOutstanding` if local loans still share the owner's reference
    /// (the close is then deferred to the last of them, as when dropped).
    ///
    /// For a bounded async wait: race the `Reclaim` against your runtime's timer,
    /// and on time-out abort it. It may block for the moment between another
    /// thread's last return and its wake-up, never longer.
    ///
    /// # Panics
    /// If the future already resolved (as polling it again would).
    pub fn abort(self) -> Result<Lender, Result<OwnedFd, LendError>> {
        match self.revert() {
            Reverted::Reopened(owner) => Ok(Lender::from_owner(owner)),
            Reverted::Finished(result) => Err(result),
        }
    }
}

impl CloseFuture {
    /// Stops waiting: `Ok(lender)`, lending again, if the loans were not all back
    /// yet; otherwise the close's outcome (the fd is closed here), as
    /// [`Reclaim::abort`] decides.
    ///
    /// # Panics
    /// If the future already resolved (as polling it again would).
    pub fn abort(self) -> Result<Lender, io::Result<()>> {
        match self.reclaim.abort() {
            Ok(lender) => Ok(lender),
            Err(Ok(fd)) => Err(close_owned(fd)),
            Err(Err(error)) => Err(Err(error.into())),
        }
    }
}

impl ShardedLender {
    /// Bounded blocking close: [`into_lender`](ShardedLender::into_lender) then
    /// [`Lender::close_wait_timeout`]. On time-out the core lender comes back (the
    /// switch to one count is not undone; shared loans keep working).
    pub fn close_wait_timeout(self, timeout: Duration) -> Result<io::Result<()>, TimedOut<Lender>> {
        self.into_lender().close_wait_timeout(timeout)
    }
}
