//! The `lending_ops` fuzz target's parts: the operations an input spells
//! ([`Op`]), a tiny reference model of what fdlend must do (`model`), and the world
//! of real fds and handles that runs them and compares with the model after every
//! step (`world`, with the close modes in `close`).
//!
//! Files are checked in the kernel, never by fd number (numbers are reused): fstat
//! identity (dev, inode) for every file, and EOF on the read end of lent pipes.

#![warn(clippy::undocumented_unsafe_blocks)]

use arbitrary::Arbitrary;

mod close;
mod model;
pub mod regions;
pub mod uring_ops;
mod world;

pub use world::World;

/// Keeps one input's fds and handles few, so a run stays short.
pub const MAX_OPS: usize = 128;
const MAX_LENDERS: usize = 4;
const MAX_FILES: usize = 24;
const MAX_HANDLES: usize = 16;

/// What kind of file a new lender lends.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Kind {
    /// A pipe: its write end is lent; the model keeps the read end to see EOF.
    Pipe,
    /// A memfd.
    Memfd,
}

/// How a lender is given up.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum CloseMode {
    /// `close()`, keeping the `Closing` handle to check its result.
    Close,
    /// Dropping the lender.
    Drop,
    /// `try_close()`.
    TryClose,
    /// `into_owned_fd()`; the fd joins the unlent files.
    IntoOwnedFd,
    /// `close_wait()`: with loans out, another thread returns them while this one
    /// blocks.
    CloseWait,
    /// `reclaim_wait()`, loans returned as for `CloseWait`.
    ReclaimWait,
    /// `close_now()`: every handle is revoked.
    CloseNow,
    /// `close_async()` or `reclaim()`: a future the input polls or drops later.
    Async {
        /// `reclaim()` rather than `close_async()`.
        reclaim: bool,
    },
    /// `close_wait_timeout(0)` with the loans kept here: closes if nothing is lent,
    /// else hands the lender back, lending again.
    CloseWaitTimeout,
}

/// One step of an input. Indices pick among the live handles of that sort (modulo
/// their number); a step with nothing to pick, or over the bounds, does nothing.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Op {
    /// Opens a file and lends it (`with_max_loans(n % 5)`, or `new` when `None`).
    NewLender {
        kind: Kind,
        max_loans: Option<u8>,
    },
    /// Lends a file nothing lends: a reused fd number, or a reclaimed fd.
    LendFile {
        file: u8,
        max_loans: Option<u8>,
    },
    /// Registers a lent fd's number again, as if it had been closed behind its
    /// lender's back and reused: must be refused with `SlotLive`.
    RegisterAgain {
        incarnation: u8,
    },
    Loan {
        lender: u8,
    },
    LocalLoan {
        lender: u8,
    },
    ToSend {
        local: u8,
    },
    TryClone {
        loan: u8,
    },
    DropLoan {
        loan: u8,
    },
    DropLocal {
        local: u8,
    },
    Ticket {
        lender: u8,
    },
    LoanTicket {
        loan: u8,
    },
    Pin {
        ticket: u8,
    },
    LendFd {
        lender: u8,
    },
    /// `lend_raw`: the checked raw token.
    LendRaw {
        lender: u8,
    },
    IntoRaw {
        loan: u8,
    },
    /// Returns a raw token that is its file's only one, then returns it again: the
    /// second return must be `NotLent` and take no one's count.
    ReturnTwice {
        token: u8,
    },
    /// Returns a `RawLoan` whose file was `close_now`ed: it counts down only its own
    /// revoked record (`Ok`), never the file that reuses the number.
    ReturnRevoked {
        token: u8,
    },
    /// Moves an unlent file's number to high epochs: past the old 32-bit wrap, or
    /// near the top of the 64-bit range.
    AdvanceEpochs {
        file: u8,
        near_the_top: bool,
    },
    ReturnFd {
        token: u8,
        via_from_raw: bool,
    },
    /// `return_fd` of an fd that was never lent: must be `NotLent`.
    ReturnUnlent {
        file: u8,
    },
    Close {
        lender: u8,
        mode: CloseMode,
    },
    PollWait {
        wait: u8,
    },
    DropWait {
        wait: u8,
    },
    /// `abort()` of a close/reclaim future: the lender back if not drained.
    AbortWait {
        wait: u8,
    },
    /// Opens a file, which takes the lowest free number: often one just closed.
    OpenFile {
        kind: Kind,
    },
    CloseFile {
        file: u8,
    },
}

/// How many fds the process holds now.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}
