//! The `uring_ops` fuzz target's parts: arbitrary push / submit / reap / finish /
//! drop-op / register / release / send / cancel-then-close / drop-ring sequences on
//! a real [`fdlend::io::uring::Ring`], over a memfd, two pipes and an O_DIRECT file
//! on disk, checked against a model ([`world`]).
//!
//! Which pipe read gets which bytes, and when a poll-driven read completes, is the
//! kernel's choice, so the model checks what must hold whatever it chose: every op
//! completes exactly once; a file read returns exactly the file's bytes; a pipe
//! read returns a contiguous piece of what was written, never more in total than
//! was written; a cancelled op reports `ECANCELED`; and at every quiescent point
//! (after a drain) each lender's `outstanding()` equals the loans the world can see.
//! A send chain (resumed with `rest` until none is left) delivers exactly the
//! file's bytes of its range, ends with an error only where the range passes the
//! file's end, and never comes back with the same range twice but once (the
//! O_DIRECT fallback); its destination may be a pipe cut to one page.

use arbitrary::Arbitrary;

mod send;
mod source;
mod world;

pub use world::World;

/// Steps per input: enough for a few registrations, cancels and drops.
pub const MAX_OPS: usize = 64;

/// What an op reads.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A 16 KiB memfd: reads complete at submit.
    File,
    /// A pipe: reads wait for `Write`.
    PipeA,
    /// Another pipe.
    PipeB,
    /// A file on disk opened O_DIRECT (plain if the filesystem refuses): only
    /// sends and registrations use it (a ring read of it would need an aligned
    /// buffer and range).
    Direct,
}

/// One step. Indices pick among live ops (modulo their number).
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Op {
    /// A read through the target's loan (`fixed`: through its registered slot,
    /// registering it first if needed).
    Read {
        target: Target,
        fixed: bool,
        offset: u16,
        len: u8,
    },
    Submit,
    /// Non-blocking reap.
    Reap,
    /// Writes `len + 1` bytes of the pipe's stream.
    Write {
        pipe: bool,
        len: u8,
    },
    Finish {
        op: u8,
    },
    DropOp {
        op: u8,
    },
    Register {
        target: Target,
    },
    Release {
        target: Target,
    },
    /// Sends `[offset, +len + 1)` of the memfd (or the O_DIRECT file) to a fresh
    /// pipe another thread drains (`short`: cut to one page), resuming with
    /// `rest` (or by `sent`, `fixed`: through its slot) until nothing is left.
    Send {
        direct: bool,
        fixed: bool,
        offset: u16,
        len: u16,
        short: bool,
    },
    /// `Ring::cancel_then_close` of the target's lender; a fresh one replaces it.
    CancelThenClose {
        target: Target,
    },
    /// Feeds every pipe enough, reaps until nothing is in flight, checks counts.
    Drain,
    /// Drops the ring (and the world's fixed-file handles): with ops in flight
    /// (leaking, a few times per process) or after a drain.
    DropRing {
        leak: bool,
    },
}

/// How many fds the process holds now.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
