//! The `regions` fuzz target's parts: region I/O (`fdlend::io`) with arbitrary
//! offsets, lengths, cut points and buffer addresses, on one file lent twice, through
//! a buffered fd and an O_DIRECT fd ([`env`]). Every outcome is predicted exactly
//! before it is compared ([`pool`] for building and splitting, [`read`] for reads and
//! sends): bytes against a plain `pread` of a third fd, the error variant and its
//! fields, and after every step the lenders' counts against the regions alive.

use arbitrary::Arbitrary;

mod env;
mod pool;
mod read;

pub use env::Env;
pub use pool::Pool;

/// Steps per input: enough to split, read and send a few regions, few enough that
/// an input costs well under a millisecond when its reads are small.
pub const MAX_OPS: usize = 16;

/// A number the input spells near the places where region arithmetic turns: small,
/// on or near a 512-byte block boundary (every O_DIRECT alignment is a multiple or
/// divisor of it), within or near the end of the file or region it is relative to,
/// near `i64::MAX` (the largest region end), or anything.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Num {
    Small(u16),
    Block(u16),
    NearBlock {
        index: u16,
        delta: i8,
    },
    /// Modulo `end + 2`: anywhere in range, or just past it.
    Within(u64),
    FromEnd(i16),
    FromMax(i16),
    Any(u64),
}

impl Num {
    /// The value, with `end` the length `Within` and `FromEnd` are relative to.
    pub fn value(self, end: u64) -> u64 {
        let block = |index: u16| u64::from(index) * 512;
        match self {
            Num::Small(v) => u64::from(v),
            Num::Block(index) => block(index),
            Num::NearBlock { index, delta } => block(index).wrapping_add_signed(i64::from(delta)),
            Num::Within(v) => v % end.saturating_add(2),
            Num::FromEnd(delta) => end.wrapping_add_signed(i64::from(delta)),
            Num::FromMax(delta) => (i64::MAX as u64).wrapping_add_signed(i64::from(delta)),
            Num::Any(v) => v,
        }
    }
}

/// Which lent fd of the file a region reads through.
#[derive(Arbitrary, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fd {
    Buffered,
    Direct,
}

impl Fd {
    fn index(self) -> usize {
        self as usize
    }
}

/// One end of a `slice` range, relative to the region.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum End {
    Included(Num),
    Excluded(Num),
    Unbounded,
}

/// The caller's buffer: `len` bytes (relative to the room left in the region) at
/// `shift` bytes into a page-aligned buffer, so its address takes every alignment.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub struct Buf {
    pub len: Num,
    pub shift: Shift,
}

/// Where the caller's buffer starts in the aligned buffer.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Shift {
    /// A multiple of 512 bytes.
    Blocks(u8),
    Bytes(u16),
}

impl Shift {
    /// The offset, below `max`.
    pub fn value(self, max: usize) -> usize {
        match self {
            Shift::Blocks(n) => usize::from(n) * 512 % max,
            Shift::Bytes(n) => usize::from(n) % max,
        }
    }
}

/// Which positional read.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum ReadKind {
    At,
    ExactAt,
    DirectAt,
    ExactDirectAt,
}

/// The first path a send tries.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum First {
    Sendfile,
    Splice,
    ReadWrite,
}

/// One step. `region` picks a live region (modulo their number); with none alive
/// the step does nothing.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Op {
    /// `LentRegion::new` with a fresh loan.
    New {
        fd: Fd,
        offset: Num,
        len: Num,
    },
    /// `RegionTicket::new` from the lender's ticket, then `pin`.
    PinNew {
        fd: Fd,
        offset: Num,
        len: Num,
    },
    /// `region.ticket().pin()`: the same range with one more loan.
    Repin {
        region: u8,
    },
    SplitAt {
        region: u8,
        at: Num,
    },
    Slice {
        region: u8,
        start: End,
        end: End,
    },
    /// `chunks`; `keep` holds every piece until the iterator ends (so the loan limit
    /// is reached), otherwise each is dropped when checked.
    Chunks {
        region: u8,
        chunk: Num,
        keep: bool,
    },
    Advance {
        region: u8,
        n: Num,
    },
    Read {
        region: u8,
        kind: ReadKind,
        at: Num,
        buf: Buf,
    },
    /// `read_to_end` appending to a vector that already holds `prefix` bytes.
    ReadToEnd {
        region: u8,
        prefix: u8,
    },
    ReadToVec {
        region: u8,
    },
    /// `send_via` into a non-blocking pipe, drained and resumed until done.
    Send {
        region: u8,
        first: First,
    },
    Drop {
        region: u8,
    },
}

thread_local! {
    // libFuzzer calls the target on one thread; a `Lender` is `!Send` anyway.
    static ENV: Env = Env::new();
}

/// Runs one input: at most [`MAX_OPS`] steps, checking the loan counts after each,
/// and that none is left once every region is dropped.
pub fn run(ops: &[Op]) {
    ENV.with(|env| {
        let mut pool = Pool::new(env);
        for &op in ops.iter().take(MAX_OPS) {
            pool.step(op);
            pool.check_counts();
        }
        pool.finish();
    });
}
