//! Lend one file descriptor to many threads without `dup()`.
//!
//! A thread-per-core server owns its files on one thread. When a request's answer is
//! "this fd and this byte range, read it later, maybe on another thread", the usual
//! hand-off is a `dup()`: a syscall on the hot path and one more kernel fd per
//! hand-off in flight (at 2M reads/s with 10% handed off, ~200k of them, and
//! `EMFILE`). fdlend lends the one fd instead, counted by a liveness word per fd
//! number, and closes it exactly once, after the last loan is back.
//!
//! - [`Lender`] owns the fd on its thread.
//! - [`Loan`]: counted, `Send + Sync + Clone`, 8 bytes; keeps the fd open.
//! - [`LocalLoan`]: the owner thread's loan, no atomic operation at all.
//! - [`Ticket`]: `Copy`, holds nothing open; [`Ticket::pin`] makes a loan only if
//!   the very same file is still open (fd numbers get reused; 64-bit epochs tell
//!   them apart, forever).
//! - [`Lender::lend_fd`]: the raw, unsafe token (`BorrowedFd<'static>`) for APIs
//!   that want a plain fd; [`Lender::lend_raw`] / [`RawLoan`], the checked form.
//! - Close modes: deferred ([`Lender::close`], or drop), blocking
//!   ([`Lender::close_wait`]), async ([`Lender::close_async`]), bounded (the
//!   `*_wait_timeout`s and [`CloseFuture::abort`], which hand the lender back in
//!   [`TimedOut`] if loans are still out), only-if-unlent ([`Lender::try_close`],
//!   [`Lender::into_owned_fd`]), and revoking ([`Lender::close_now`]).
//! - [`io`]: a [`LentRegion`] is a loan plus a byte range, read (`pread`,
//!   O_DIRECT-aware), sent (`sendfile`) or submitted to io_uring on any thread.
//! - [`ShardedLender`]: per-CPU counts for a file many threads hammer at once.
//! - `glommio` (feature): lend a glommio `DmaFile`'s fd, close it asynchronously.
//!
//! ```
//! use fdlend::Lender;
//! use std::io::Write;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut file = std::fs::File::from(nix::sys::memfd::memfd_create(
//!     "example",
//!     nix::sys::memfd::MFdFlags::empty(),
//! )?);
//! file.write_all(b"hello, lent world")?;
//! let lender = Lender::try_from(file)?;
//!
//! // Hand the fd to another thread: no dup(), one atomic increment.
//! let loan = lender.loan()?;
//! let reader = std::thread::spawn(move || {
//!     let mut buf = [0; 4];
//!     nix::sys::uio::pread(&loan, &mut buf, 7).map(|_| buf)
//! });
//!
//! // A ticket holds nothing open; it pins only while the file is still open.
//! let ticket = lender.ticket();
//!
//! // Wait for the loan on the other thread, then close here, exactly once.
//! assert_eq!(&reader.join().unwrap()?, b"lent");
//! lender.close_wait()?;
//! assert!(ticket.pin().is_err());
//! # Ok(())
//! # }
//! ```
//!
//! `SAFETY.md` states every contract; `ARCHITECTURE.md` maps the modules.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(
    missing_docs,
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc
)]

mod bounded;
mod close;
#[cfg(not(any(loom, miri)))]
mod cpu;
mod error;
mod fd;
#[cfg(feature = "glommio")]
pub mod glommio;
#[cfg(not(loom))]
pub mod io;
mod lender;
mod liveness;
mod loan;
mod raw;
mod reclaim;
mod record;
mod sharded;
mod sync;
mod table;

pub use close::Closing;
pub use error::{LendError, RegisterError, TimedOut};
#[cfg(not(loom))]
pub use io::{LentRegion, RegionError, RegionTicket};
pub use lender::Lender;
pub use loan::{current_epoch, is_current, Epoch, Loan, LocalLoan, Ticket};
pub use raw::{return_fd, return_raw, RawLoan};
pub use reclaim::{CloseFuture, Reclaim};
pub use sharded::{ShardedLender, SharedLoan};

static_assertions::assert_impl_all!(Loan: Send, Sync, Clone, std::os::fd::AsFd);
static_assertions::assert_not_impl_any!(LocalLoan: Send, Sync);
static_assertions::assert_not_impl_any!(Lender: Send, Sync);
static_assertions::assert_impl_all!(Ticket: Copy, Send, Sync);
static_assertions::assert_impl_all!(CloseFuture: Send);
static_assertions::assert_impl_all!(Reclaim: Send);
static_assertions::assert_impl_all!(Closing: Send, Sync);
static_assertions::const_assert!(std::mem::size_of::<Loan>() <= 16);
static_assertions::const_assert_eq!(std::mem::size_of::<Loan>(), 8);
static_assertions::const_assert_eq!(std::mem::size_of::<Ticket>(), 16);
static_assertions::assert_impl_all!(RawLoan: Copy, Send, Sync);
static_assertions::const_assert_eq!(std::mem::size_of::<LocalLoan>(), 8);

/// Test support, not part of the stable API and never for production: behind the
/// non-default `testing` feature (this crate's own tests, loom models and fuzz targets
/// enable it), since it can use up an fd number's epochs for the life of the process.
#[cfg(any(test, feature = "testing"))]
#[doc(hidden)]
pub mod testing {
    use crate::LendError;
    use std::os::fd::RawFd;

    /// Moves fd number `fd`'s next epoch forward to `to` (never back, so no
    /// `(fd, epoch)` pair can ever name two files): lets a test start a number just
    /// below the end of its epochs instead of registering it 2^64 times. Moved to
    /// the end, the number is refused (`Exhausted`) for the life of the process.
    pub fn advance_epochs(fd: RawFd, to: u64) -> Result<(), LendError> {
        crate::table::global().advance_incarnations(fd, to)
    }
}

/// Benchmark support, not part of the stable API: harmless to call (the CPU number
/// is only a shard hint).
#[doc(hidden)]
pub mod bench {
    /// Picks where `SharedLoan` reads the current CPU: the rseq area glibc registers
    /// (`true`, the default where there is one) or `sched_getcpu` (`false`). Returns
    /// whether the rseq area is in use now.
    #[cfg(not(any(loom, miri)))]
    pub fn cpu_from_rseq(rseq: bool) -> bool {
        crate::cpu::use_rseq(rseq)
    }
}
