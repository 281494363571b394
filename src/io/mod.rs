//! Region I/O: hand a byte range of a lent file to another thread as one value, and
//! read or send it there.
//!
//! - [`LentRegion`]: a [`Loan`](crate::Loan) plus `offset` and `len`, checked once;
//!   split it ([`LentRegion::split_at`], [`LentRegion::slice`],
//!   [`LentRegion::chunks`]) to fan work out. [`RegionTicket`] is the same range held
//!   by a ticket, pinned only when used.
//! - Positional reads on any thread: [`LentRegion::read_at`],
//!   [`LentRegion::read_exact_at`], [`LentRegion::read_to_vec`] (`pread`, looping
//!   over short reads and `EINTR`). O_DIRECT fds just work: unaligned requests are
//!   widened to the aligned range ([`DirectAlignment`], [`AlignedBuf`]);
//!   [`LentRegion::read_direct_at`] refuses to copy instead.
//! - Sending to a socket or pipe: [`LentRegion::send_to`] (`sendfile`, then
//!   `splice`, then read+write, reporting the [`SendPath`]s that ran and the bytes
//!   each moved, [`PathBytes`]), resumable on non-blocking destinations
//!   ([`SendProgress::Blocked`]). A send never fails for want of an fd: splice
//!   reuses one pipe per thread ([`release_thread_pipe`]) and, when none can be
//!   made, the copy path serves. O_DIRECT ranges send their aligned middle with
//!   sendfile/splice and copy only the ragged edges.
//! - io_uring: [`uring::Ring`] turns a caller's ring into ops that own the
//!   region and buffer until their completion is reaped.
//!
//! ```
//! use fdlend::Lender;
//! use std::io::Write;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut file = tempfile_with(b"0123456789")?;
//! let lender = Lender::try_from(file)?;
//! let region = lender.region(2, 5)?; // a loan plus a checked range
//! let bytes = std::thread::spawn(move || region.read_to_vec()).join().unwrap()?;
//! assert_eq!(bytes, b"23456");
//! lender.close_wait()?;
//! # Ok(())
//! # }
//! # fn tempfile_with(bytes: &[u8]) -> std::io::Result<std::fs::File> {
//! #     let fd = nix::sys::memfd::memfd_create("doc", nix::sys::memfd::MFdFlags::empty())?;
//! #     let mut file = std::fs::File::from(fd);
//! #     file.write_all(bytes)?;
//! #     Ok(file)
//! # }
//! ```

mod aligned;
mod direct;
mod error;
mod pipe_pool;
mod read;
mod region;
mod send;
mod send_paths;
#[cfg(not(miri))]
pub mod uring;

pub use aligned::AlignedBuf;
pub use direct::{is_direct, AlignmentSource, DirectAlignment, FALLBACK_ALIGN};
pub use error::{Misaligned, RegionError, SendError, SendPath};
pub use pipe_pool::release_thread_pipe;
pub use region::{Chunks, LentRegion, RegionTicket};
pub use send::SendProgress;
pub use send_paths::PathBytes;
