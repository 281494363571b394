//! The two operations that touch fd ownership directly: borrowing a counted fd and
//! closing one. Everything else goes through these, so the raw-fd unsafety of the
//! crate is in this one file.

use nix::errno::Errno;
use std::os::fd::{BorrowedFd, RawFd};

/// Borrows a counted fd for as long as the caller's count lasts.
///
/// # Safety
/// - `fd` is open and stays open while the returned value is used: the caller holds a
///   counted reference in the fd's liveness word (or owns the fd outright).
#[inline]
pub(crate) unsafe fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: the caller's counted reference keeps `fd` open (contract above); the
    // `'static` lifetime is bounded in practice by that count, which is what
    // SAFETY.md's rules for raw tokens are about.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Closes `fd` once. `close(2)` is never retried: on Linux the fd is released even
/// when it reports `EINTR`, and a retry could close a number another thread just got.
///
/// # Safety
/// - The caller owns `fd`: this is the single close of its incarnation, decided by
///   the liveness word (the drain, a retire, or a revoke), and nothing uses `fd`
///   afterwards.
pub(crate) unsafe fn close(fd: RawFd) -> Result<(), Errno> {
    // SAFETY: exclusive ownership and single use are the caller's contract above.
    let rc = unsafe { libc::close(fd) };
    if rc == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}
