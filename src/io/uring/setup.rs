//! The top of the ring: [`Ring::new`] and [`Ring::with_ring`] build a ring and wire
//! every feature's hooks into it (fixed-file settling, hand-off installs, the
//! cancel inbox). The only file that knows them all.

use super::ring::{Hooks, Ring};
use io_uring::IoUring;
use std::io;

impl Ring {
    /// A new ring of `entries` SQEs (see [`IoUring::new`]).
    pub fn new(entries: u32) -> io::Result<Ring> {
        Ring::with_ring(IoUring::new(entries)?)
    }

    /// Takes over a ring built by the caller (with its own setup flags). From now
    /// on it is reached only through this `Ring`, so its table is the only one, and
    /// every other SQE goes through [`push_foreign`](Ring::push_foreign). Entries
    /// the caller queued before cannot pass for fdlend's ops: op ids are sealed with
    /// a random key of this ring, and CQEs naming no op go to `reap`'s `foreign`.
    /// The ring keeps one read of its own armed (the cancel inbox's eventfd, see
    /// [`cancel_then_close`](super::cancel_then_close)); fails only if that
    /// eventfd cannot be made.
    pub fn with_ring(uring: IoUring) -> io::Result<Ring> {
        let hooks = Hooks {
            handoff_cqe: Ring::installed,
            after_reap,
            at_drop,
        };
        let mut ring = Ring::assemble(uring, hooks)?;
        ring.arm_nudge();
        Ok(ring)
    }
}

fn after_reap(ring: &mut Ring) {
    ring.settle_files();
    ring.serve_mailbox();
}

fn at_drop(ring: &mut Ring) {
    ring.close_mailbox();
    ring.files.borrow_mut().forget_busy_loans();
}
