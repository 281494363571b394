//! Raw tokens: a counted reference without a handle, for APIs that carry a plain fd
//! (FFI, io_uring `user_data`). Two forms:
//!
//! - `BorrowedFd<'static>` from `Lender::lend_fd`, given back with [`return_fd`]:
//!   the number alone, so fdlend finds its record through the table.
//! - [`RawLoan`] from [`Loan::into_raw`] or `Lender::lend_raw`, given back with
//!   [`return_raw`] or [`Loan::from_raw`]: it carries its record and incarnation, so
//!   a stale return (after `close_now`, or of another file's token) is refused.
//!
//! Both count in the word's `raw` field, apart from the loans' count: a return is one
//! `fetch_sub` on that field, checked afterwards and undone if no raw token was
//! outstanding (`NotLent`). So a double return, even racing other returns, can at
//! worst take another raw token's unit, never a safe loan's or the owner's, and
//! `outstanding()` never reads a safe loan as gone.

use crate::error::LendError;
use crate::fd;
use crate::liveness::{Refusal, Released, State};
use crate::loan::{gone, refusal_to_error, Epoch, Loan};
use crate::record::Record;
use crate::table;
use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// A loan turned into a token: `Copy`, it names its file exactly (record, fd,
/// incarnation), so giving it back checks that it still counts that file.
#[derive(Clone, Copy)]
pub struct RawLoan {
    record: &'static Record,
    fd: RawFd,
    epoch: u64,
}

impl RawLoan {
    /// One more reference to `record`'s file, by its owner, as a raw token.
    #[inline]
    pub(crate) fn lend(record: &'static Record) -> Result<RawLoan, LendError> {
        count_raw(record)?;
        Ok(RawLoan {
            record,
            fd: record.fd(),
            epoch: record.incarnation(),
        })
    }

    /// The fd number.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// The incarnation it counts.
    pub fn epoch(&self) -> Epoch {
        Epoch(self.epoch)
    }

    /// The fd itself.
    ///
    /// # Safety
    /// - The token's count has not been given back (by [`return_raw`] or
    ///   [`Loan::from_raw`]), and the result is not used after it is.
    /// - The lender has not `close_now`ed the file (check [`RawLoan::is_current`]
    ///   where that can happen, and keep it from happening while the fd is used).
    #[inline]
    pub unsafe fn borrow(&self) -> BorrowedFd<'static> {
        // SAFETY: the token's count keeps the fd open (the caller's contract above).
        unsafe { fd::borrow(self.fd) }
    }

    /// True while the token's file is open or draining (not revoked, not closed).
    pub fn is_current(&self) -> bool {
        self.names_its_file() && self.record.is_live()
    }

    #[inline]
    fn names_its_file(&self) -> bool {
        self.record.names(self.fd, self.epoch)
    }

    /// Why this token cannot be given back, if it cannot.
    #[inline]
    fn check(&self) -> Result<(), LendError> {
        if self.names_its_file() {
            Ok(())
        } else {
            Err(stale_token(self.fd))
        }
    }
}

impl fmt::Debug for RawLoan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawLoan")
            .field("fd", &self.fd)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl Loan {
    /// Turns the loan into a raw token without returning its count; give it back
    /// with [`Loan::from_raw`] or [`return_raw`]. Refused (the loan comes back) only
    /// with 2^23 raw tokens of this file outstanding.
    pub fn into_raw(self) -> Result<RawLoan, Loan> {
        let record = self.record;
        if record.liveness.mark_raw().is_err() {
            return Err(self);
        }
        std::mem::forget(self);
        Ok(RawLoan {
            record,
            fd: record.fd(),
            epoch: record.incarnation(),
        })
    }

    /// Rebuilds the loan a raw token stands for, taking over its count.
    ///
    /// Refused with `Stale`/`Closed` when the token's file was revoked or closed and
    /// its record reused, `NotLent` when no raw token of it is outstanding.
    ///
    /// # Safety
    /// - `token`'s count has not been given back yet: each token is given back once,
    ///   by `from_raw` or [`return_raw`]. (A second give-back is refused while no
    ///   other raw token of the file is out; otherwise it takes one of theirs.)
    pub unsafe fn from_raw(token: RawLoan) -> Result<Loan, LendError> {
        token.check()?;
        match token.record.liveness.unmark_raw() {
            Ok(()) => Ok(Loan {
                record: token.record,
            }),
            Err((refusal, released)) => {
                token.record.finish(released);
                Err(raw_refusal(token.fd, refusal, token.record))
            }
        }
    }
}

/// Gives back a raw token's count. If it was the last reference of a closing file,
/// the close happens here.
///
/// Refused with `Stale`/`Closed` for a token of a revoked or closed file whose record
/// was reused, `NotLent` when no raw token of the file is outstanding.
///
/// # Safety
/// - `token`'s count has not been given back yet (see [`Loan::from_raw`]).
/// - Nothing uses `token.borrow()` after this call.
#[inline]
pub unsafe fn return_raw(token: RawLoan) -> Result<(), LendError> {
    token.check()?;
    release_raw(token.fd, token.record)
}

/// Returns the count of a raw token from [`Lender::lend_fd`](crate::Lender::lend_fd).
/// If it was the last loan of a closing file, the close happens here.
///
/// Returns `NotLent` when the fd's number has no raw token outstanding (a token
/// returned twice, or never lent): a return never takes a safe loan's count, not
/// even while it races other returns (it may take another raw token's).
///
/// # Safety
/// - `token` came from `Lender::lend_fd` and has not been returned yet: each token
///   is returned exactly once.
/// - The token is not used after this call.
/// - The lender has not `close_now`ed the token's file since it was lent: the
///   number's current file would get the return instead (record
///   [`Lender::epoch`](crate::Lender::epoch) and check [`is_current`](crate::is_current)
///   when that can happen, or use [`RawLoan`], which checks it for you).
#[inline]
pub unsafe fn return_fd(token: BorrowedFd<'static>) -> Result<(), LendError> {
    let fd = token.as_raw_fd();
    let record = table::global()
        .current(fd)
        .ok_or(LendError::NotLent { fd })?;
    release_raw(fd, record)
}

#[cold]
#[inline(never)]
fn stale_token(fd: RawFd) -> LendError {
    gone(fd)
}

/// One more raw token of `record`'s file, by a holder of a reference (`lend_fd`
/// builds its token from the owner's fd; no `RawLoan` goes through memory).
#[inline]
pub(crate) fn count_raw(record: &'static Record) -> Result<(), LendError> {
    match record.liveness.acquire_held_raw(|| record.admit_below()) {
        Ok(()) => Ok(()),
        Err(refusal) => Err(refusal_to_error(record.fd(), refusal, record)),
    }
}

#[inline]
fn release_raw(fd: RawFd, record: &'static Record) -> Result<(), LendError> {
    match record.liveness.release_raw() {
        Ok(Released::Kept) => Ok(()),
        Ok(released) => {
            record.finish(released);
            Ok(())
        }
        Err((refusal, released)) => Err(refused_return(fd, refusal, released, record)),
    }
}

/// A refused raw return: its undo may have freed the word (finish that), then why.
#[cold]
#[inline(never)]
fn refused_return(
    fd: RawFd,
    refusal: Refusal,
    released: Released,
    record: &'static Record,
) -> LendError {
    record.finish(released);
    raw_refusal(fd, refusal, record)
}

#[cold]
fn raw_refusal(fd: RawFd, refusal: Refusal, record: &Record) -> LendError {
    match refusal {
        Refusal::Not(State::Dead) => LendError::NotLent { fd },
        other => refusal_to_error(fd, other, record),
    }
}
