//! What can go wrong when lending, and what to do about it.

use std::fmt;
use std::os::fd::{OwnedFd, RawFd};

/// Why a loan, ticket, raw token or registration was refused. Nothing is lost when
/// one is returned: no count was taken and no fd was closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LendError {
    /// The file behind this handle was closed, and no `Lender` lends its fd number
    /// now (the number may be unused, or name a file fdlend does not know).
    Closed {
        /// The fd number the handle named.
        fd: RawFd,
    },
    /// The owner has begun closing: existing loans drain, new ones are refused.
    Closing {
        /// The fd number being closed.
        fd: RawFd,
    },
    /// The handle's file was closed and its fd number is now lent for another file.
    Stale {
        /// The reused fd number.
        fd: RawFd,
    },
    /// The fd already has as many loans outstanding as its limit allows.
    Saturated {
        /// The saturated fd.
        fd: RawFd,
        /// Its limit on outstanding loans.
        limit: u32,
    },
    /// Another `Lender` already lends this fd number: the fd was probably closed
    /// behind that lender's back and the number reused.
    SlotLive {
        /// The fd number already in use.
        fd: RawFd,
    },
    /// The fd is not open.
    InvalidFd {
        /// The number that is not an open fd.
        fd: RawFd,
    },
    /// The fd number is beyond the largest number fdlend can track.
    OutOfRange {
        /// The fd number.
        fd: RawFd,
        /// The largest fd number fdlend tracks.
        max: RawFd,
    },
    /// A raw token was returned for an fd that has nothing lent.
    NotLent {
        /// The fd number returned.
        fd: RawFd,
    },
    /// A wait for the close (`close_wait`, `Closing::wait`, awaiting `Closing`,
    /// `close_async`, `reclaim`) ran on the owner's thread while `LocalLoan`s of this
    /// lender are alive there: waiting would never end, so the close was handed to
    /// the last of them instead.
    LocalLoansOutstanding {
        /// The fd whose close was deferred.
        fd: RawFd,
        /// How many local loans were alive when the close began.
        count: usize,
    },
    /// The fd number has been registered 2^64 times; it cannot get a new
    /// incarnation without reusing one, so it is not lent again.
    Exhausted {
        /// The fd number.
        fd: RawFd,
    },
}

impl LendError {
    /// The `LendError` inside an `io::Error` that fdlend made from one (as
    /// `close_wait` and `Closing::wait` return), if it is one.
    pub fn from_io(error: &std::io::Error) -> Option<LendError> {
        error.get_ref()?.downcast_ref::<LendError>().copied()
    }

    /// The fd number the error is about.
    pub fn fd(&self) -> RawFd {
        match *self {
            LendError::Closed { fd }
            | LendError::Closing { fd }
            | LendError::Stale { fd }
            | LendError::Saturated { fd, .. }
            | LendError::SlotLive { fd }
            | LendError::InvalidFd { fd }
            | LendError::OutOfRange { fd, .. }
            | LendError::NotLent { fd }
            | LendError::LocalLoansOutstanding { fd, .. }
            | LendError::Exhausted { fd } => fd,
        }
    }
}

impl fmt::Display for LendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            LendError::Closed { fd } => {
                write!(f, "fd {fd} was closed; re-open the file and lend it again")
            }
            LendError::Closing { fd } => {
                write!(
                    f,
                    "fd {fd} is closing; no new loans until it is registered again"
                )
            }
            LendError::Stale { fd } => write!(
                f,
                "fd {fd} was closed and its number is now lent for another file; drop this handle"
            ),
            LendError::Saturated { fd, limit } => write!(
                f,
                "fd {fd} has {limit} loans outstanding, its limit; return some before lending more"
            ),
            LendError::SlotLive { fd } => write!(
                f,
                "fd {fd} is already lent by another Lender; it was probably closed behind \
                 that lender's back, so find that close"
            ),
            LendError::InvalidFd { fd } => write!(f, "fd {fd} is not an open file descriptor"),
            LendError::OutOfRange { fd, max } => {
                write!(
                    f,
                    "fd {fd} is above {max}, the largest fd number fdlend tracks"
                )
            }
            LendError::NotLent { fd } => write!(
                f,
                "fd {fd} has no loan outstanding; a raw token was returned twice or never lent"
            ),
            LendError::LocalLoansOutstanding { fd, count } => write!(
                f,
                "fd {fd} had {count} local loans alive on this thread, so waiting here for its \
                 close would never end; the close was deferred to the last of them"
            ),
            LendError::Exhausted { fd } => write!(
                f,
                "fd number {fd} has used up its 2^64 incarnations and cannot be lent again; \
                 dup2 the file to another number"
            ),
        }
    }
}

impl std::error::Error for LendError {}

impl From<LendError> for std::io::Error {
    fn from(error: LendError) -> Self {
        let kind = match error {
            LendError::InvalidFd { .. }
            | LendError::OutOfRange { .. }
            | LendError::Exhausted { .. } => std::io::ErrorKind::InvalidInput,
            LendError::Saturated { .. } | LendError::LocalLoansOutstanding { .. } => {
                std::io::ErrorKind::WouldBlock
            }
            _ => std::io::ErrorKind::Other,
        };
        std::io::Error::new(kind, error)
    }
}

/// A refused registration: the error, and the fd handed back untouched.
#[derive(Debug)]
pub struct RegisterError {
    error: LendError,
    fd: OwnedFd,
}

impl RegisterError {
    pub(crate) fn new(error: LendError, fd: OwnedFd) -> Self {
        RegisterError { error, fd }
    }

    /// Why the registration was refused.
    pub fn error(&self) -> LendError {
        self.error
    }

    /// The fd, still open and still yours.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl fmt::Display for RegisterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot lend: {}", self.error)
    }
}

impl From<RegisterError> for std::io::Error {
    /// The refusal as an `io::Error` (the fd is closed with the `RegisterError`).
    fn from(error: RegisterError) -> Self {
        error.error.into()
    }
}

impl std::error::Error for RegisterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// A bounded wait for a close ran out of time: the loans were not all back by the
/// deadline. Nothing was closed or lost: the owner (a [`Lender`](crate::Lender)) is
/// handed back lending again, new loans and ticket pins admitted once more, with
/// [`outstanding`](TimedOut::outstanding) loans still out. Retry, or pick another
/// close mode.
pub struct TimedOut<T> {
    inner: T,
    fd: RawFd,
    outstanding: usize,
}

impl<T> TimedOut<T> {
    pub(crate) fn new(inner: T, fd: RawFd, outstanding: usize) -> TimedOut<T> {
        TimedOut {
            inner,
            fd,
            outstanding,
        }
    }

    /// What was handed back: the owner, still lending.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// Loans (and raw tokens, local loans) still out when the wait gave up.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }
}

impl<T> fmt::Debug for TimedOut<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedOut")
            .field("fd", &self.fd)
            .field("outstanding", &self.outstanding)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for TimedOut<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "close timed out: {} loans of fd {} still out after the deadline; the lender is \
             handed back",
            self.outstanding, self.fd
        )
    }
}

impl<T> std::error::Error for TimedOut<T> {}
