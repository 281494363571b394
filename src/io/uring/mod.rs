//! io_uring ops for regions, on a ring fdlend binds to its one op table.
//!
//! fdlend runs no event loop. The caller makes a [`Ring`] (it owns the `IoUring`,
//! so the ring has exactly one op table), pushes ops, submits and reaps as it
//! likes. Each op owns its region (so its loan) and its buffer or destination in the
//! table, not in the op handle: dropping the handle before the completion arrives
//! leaves them parked there until [`Ring::reap`] takes its CQE, so the kernel never
//! writes to freed memory or into an fd number that was closed and reused. The
//! contract is spelled out in SAFETY.md ("The io_uring contract").
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fdlend::io::uring::Ring;
//! use fdlend::io::LentRegion;
//! use std::io::Write;
//!
//! let fd = nix::sys::memfd::memfd_create("doc", nix::sys::memfd::MFdFlags::empty())?;
//! let mut file = std::fs::File::from(fd);
//! file.write_all(b"hello, ring")?;
//! let lender = fdlend::Lender::try_from(file)?;
//!
//! let mut ring = Ring::new(8)?;
//! let region = LentRegion::new(lender.loan()?, 7, 4)?;
//! let read = ring.read(region, vec![0; 4]).map_err(|full| full.to_string())?;
//! ring.submit_and_wait(1)?;
//! ring.reap(|_foreign| {});
//! let done = read.finish().ok().expect("its CQE was reaped");
//! assert_eq!(&done.buf[..done.result?], b"ring");
//! # Ok(())
//! # }
//! ```
//!
//! Registered files and cancel-then-close: a worker registers a loan once, reads
//! through the fixed slot, and the owner cancels the read still waiting before it
//! closes (the README's example):
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fdlend::io::uring::{cancel_then_close, Ring};
//! use fdlend::Lender;
//! use nix::errno::Errno;
//! use std::io::{Error, Write};
//! use std::sync::mpsc;
//!
//! let (read_end, write_end) = nix::unistd::pipe()?;
//! std::fs::File::from(write_end.try_clone()?).write_all(b"hello")?;
//! let lender = Lender::try_from(read_end)?;
//! let loan = lender.loan()?;
//! let (waiting, is_waiting) = mpsc::channel();
//! let worker = std::thread::spawn(move || -> std::io::Result<_> {
//!     let mut ring = Ring::new(8)?;
//!     let file = ring.register(loan).map_err(|e| Error::other(e.to_string()))?; // once
//!     let mut reads = Vec::new();
//!     for _ in 0..2 {
//!         // Many ops on the slot: the kernel skips the per-op file lookup.
//!         let read = ring.read_fixed(&file, 0, vec![0; 64]);
//!         reads.push(read.map_err(|e| Error::other(e.to_string()))?);
//!     }
//!     ring.submit()?;
//!     waiting.send(()).unwrap();
//!     while ring.in_flight() > 0 {
//!         ring.submit_and_wait(1)?; // the cancel's nudge wakes this
//!         ring.reap(|_not_ours| {});
//!     }
//!     ring.release(file); // unregistered once its ops are reaped; the loan returns
//!     Ok(reads.into_iter().map(|op| op.finish().expect("reaped")).collect::<Vec<_>>())
//! });
//! is_waiting.recv()?;
//! // One read got "hello"; the other waits for data that never comes.
//! let (_cancelled, closed) = cancel_then_close(lender).expect("no Ring on this thread");
//! closed?; // the fd is closed: nothing lent, nothing registered
//! let mut results: Vec<_> = worker.join().unwrap()?.into_iter().map(|done| {
//!     done.result.map(|n| done.buf[..n].to_vec())
//! }).collect();
//! results.sort_by_key(Result::is_err);
//! assert_eq!(results, [Ok(b"hello".to_vec()), Err(Errno::ECANCELED)]);
//! drop(write_end);
//! # Ok(())
//! # }
//! ```

mod bounce;
mod cancel;
mod cancel_sends;
mod error;
mod fixed;
mod fixed_ops;
mod handle;
mod handoff;
mod ids;
mod inbox;
mod ops;
mod requests;
mod ring;
mod send_ops;
mod setup;
mod slots;
mod table;

pub use cancel::{cancel_in_flight, cancel_then_close, Cancelled, Cancelling, RingOnThisThread};
pub use error::{FixedOpError, FixedOpRefused, RegisterRefused};
pub use fixed::DEFAULT_FIXED_FILES;
pub use fixed_ops::{FixedReadDone, FixedReadOp, FixedSendDone, FixedSendOp};
pub use handle::QueueFull;
pub use handoff::{HandOffOp, Mailslot};
pub use ids::{HANDOFF_TAG, USER_DATA_TAG};
pub use ops::{OwnedBuf, ReadDone, ReadOp};
pub use ring::{ForeignPushError, Ring};
pub use send_ops::{SendDone, SendOp, SendRefused};
pub use slots::FixedFile;

/// True when `user_data` carries fdlend's op tag. Such CQEs come from a
/// [`Ring`]'s own ops, which it completes itself; one whose id names none of them
/// (forged, or from an SQE that bypassed [`Ring::push_foreign`]) goes to `reap`'s
/// `foreign` callback.
pub fn is_ours(user_data: u64) -> bool {
    ids::is_tagged(user_data)
}
