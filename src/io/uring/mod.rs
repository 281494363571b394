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

mod cancel;
mod cancel_sends;
mod error;
mod fixed;
mod fixed_ops;
mod handoff;
mod ops;
mod ring;
mod table;

pub use cancel::{cancel_in_flight, cancel_then_close, Cancelled, Cancelling, RingOnThisThread};
pub use error::{FixedOpError, FixedOpRefused, RegisterRefused};
pub use fixed::{FixedFile, DEFAULT_FIXED_FILES};
pub use fixed_ops::{FixedReadDone, FixedReadOp, FixedSendDone, FixedSendOp};
pub use handoff::{HandOffOp, Mailslot, HANDOFF_TAG};
pub use ops::{OwnedBuf, QueueFull, ReadDone, ReadOp, SendDone, SendOp, SendRefused};
pub use ring::{ForeignPushError, Ring};
pub use table::USER_DATA_TAG;

/// True when `user_data` carries fdlend's tag (one of its ops): such CQEs only
/// ever come from a [`Ring`], which reaps them itself.
pub fn is_ours(user_data: u64) -> bool {
    table::is_tagged(user_data)
}
