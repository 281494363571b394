//! The io_uring module's error types (kept here, apart from `crate::io::error`).

use crate::Loan;
use std::fmt;
use std::io;

/// Why [`Ring::register`](super::Ring::register) registered nothing; the loan comes back.
#[derive(Debug)]
pub enum RegisterRefused {
    /// Every slot of the table is taken; release one (or reserve a bigger table
    /// before the first registration).
    TableFull {
        /// The loan, untouched.
        loan: Loan,
    },
    /// The kernel refused the registration.
    Kernel {
        /// What `io_uring_register` said.
        error: io::Error,
        /// The loan, untouched.
        loan: Loan,
    },
}

impl fmt::Display for RegisterRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterRefused::TableFull { .. } => f.write_str(
                "the ring's fixed-file table is full; release a FixedFile, or reserve more slots before the first register",
            ),
            RegisterRefused::Kernel { error, .. } => {
                write!(f, "the kernel refused to register the file: {error}")
            }
        }
    }
}

impl std::error::Error for RegisterRefused {}

/// Why a fixed-file op was not pushed; everything comes back in `back`.
#[derive(Debug)]
pub struct FixedOpRefused<T> {
    /// What went wrong.
    pub reason: FixedOpError,
    /// The op's buffer or destination, untouched.
    pub back: T,
}

/// See [`FixedOpRefused`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FixedOpError {
    /// The submission queue has no room for the op's entries; submit, then retry.
    QueueFull,
    /// The `FixedFile` belongs to another ring.
    OtherRing,
    /// A cancel-then-close took the file (or, for a hand-off, its lender is
    /// closing and lends no more).
    Revoked,
    /// The `FixedFile` waits for a file another ring has not sent yet
    /// ([`Ring::open_mailslot`](super::Ring::open_mailslot)); reap, then retry.
    NotInstalled,
    /// A send's private pipe could not be made (`EMFILE`, ...).
    Pipe(nix::errno::Errno),
}

impl<T> fmt::Display for FixedOpRefused<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let FixedOpError::Pipe(errno) = self.reason {
            return write!(
                f,
                "cannot make the send's pipe: {}; free some fds",
                errno.desc()
            );
        }
        f.write_str(match self.reason {
            FixedOpError::QueueFull => {
                "the io_uring submission queue is full; submit what is queued, then push again"
            }
            FixedOpError::OtherRing => {
                "this FixedFile was registered on another ring; use that ring or register there"
            }
            FixedOpError::Revoked => {
                "the file is being cancelled and closed; release this FixedFile"
            }
            FixedOpError::NotInstalled => {
                "no file has arrived in this mailslot yet; reap the ring, then retry"
            }
            FixedOpError::Pipe(_) => unreachable!("written above"),
        })
    }
}

impl<T: fmt::Debug> std::error::Error for FixedOpRefused<T> {}
