//! [`BlockingReader`]: a lent fd read on another executor's blocking-thread pool.

use super::source::covering;
use super::BorrowSource;
use crate::{LentRegion, Loan};
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::Arc;

/// Reads a lent fd from any glommio executor without blocking it, with crates.io
/// glommio as is: each read is a `pread` (through [`LentRegion::read_at`], which
/// handles `O_DIRECT` alignment with a bounce buffer when needed) run on the
/// executor's blocking-thread pool with `glommio::executor().spawn_blocking`.
///
/// Made from a [`Loan`] or a [`LentRegion`] sent from the owner's thread; opens,
/// duplicates and registers nothing, and never closes the fd. It is `Send` and
/// `Sync`: clone-free sharing across tasks is through `&self`. Every read in flight
/// holds the loan too (the pool thread does), so the owner's close waits for reads
/// that are still running even if their futures were dropped.
///
/// A read future dropped before it resolves lets its `pread` finish on the pool
/// (holding the loan until then); glommio 0.9's `spawn_blocking` then never frees
/// that read's buffer.
///
/// It costs a thread hand-off per read (README, "glommio", gives the measured cost
/// against the ring path); with the `glommio-ring` feature and fdlend's patched
/// glommio, `BorrowedDmaFile` reads through the executor's own io_uring instead.
pub struct BlockingReader {
    lent: Arc<Lent>,
}

/// The source's loan as a whole-file region (positions are file offsets), and the
/// region asked for, if any.
struct Lent {
    whole: LentRegion,
    region: Option<(u64, u64)>,
}

impl BlockingReader {
    /// A reader of the lent fd: no syscall, one allocation for its shared state.
    pub fn new(lent: impl Into<BorrowSource>) -> BlockingReader {
        let (loan, region) = match lent.into() {
            BorrowSource::Loan(loan) => (loan, None),
            BorrowSource::Region(region) => {
                let range = (region.offset(), region.len());
                (region.into_loan(), Some(range))
            }
        };
        // The largest region the loan can name: positions below are file offsets.
        let whole = LentRegion::new(loan, 0, i64::MAX as u64)
            .expect("fdlend: 0..i64::MAX is a valid region");
        BlockingReader {
            lent: Arc::new(Lent { whole, region }),
        }
    }

    /// Reads up to `size` bytes at file offset `pos` on the executor's blocking
    /// pool: fewer only at end of file. `InvalidInput` for a range past the largest
    /// file offset; the buffer is sized by what the file holds, never by `size`
    /// alone. Must be awaited inside a glommio executor (glommio panics otherwise).
    pub async fn read_at(&self, pos: u64, size: usize) -> io::Result<Vec<u8>> {
        covering(pos, size, 1)?;
        let lent = Arc::clone(&self.lent);
        ::glommio::executor()
            .spawn_blocking(move || lent.read(pos, size))
            .await
    }

    /// The region's bytes, for one made from a [`LentRegion`] (short if the file
    /// ends first); for a plain loan, an `InvalidInput` error.
    pub async fn read_region(&self) -> io::Result<Vec<u8>> {
        let Some((offset, len)) = self.lent.region else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "BlockingReader::read_region: made from a Loan, not a LentRegion",
            ));
        };
        let len = usize::try_from(len).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "region longer than this machine's address space",
            )
        })?;
        self.read_at(offset, len).await
    }

    /// The region it was made from, as `(offset, len)`, if any.
    pub fn region(&self) -> Option<(u64, u64)> {
        self.lent.region
    }

    /// The loan it holds.
    pub fn loan(&self) -> &Loan {
        self.lent.whole.loan()
    }
}

impl Lent {
    /// On a pool thread: the bytes at `pos`, as many as the file has up to `size`.
    fn read(&self, pos: u64, size: usize) -> io::Result<Vec<u8>> {
        let file_size = nix::sys::stat::fstat(self.whole.loan())?.st_size as u64;
        let len = (size as u64).min(file_size.saturating_sub(pos)) as usize;
        let mut buf = Vec::new();
        buf.try_reserve_exact(len)
            .map_err(|error| io::Error::new(io::ErrorKind::OutOfMemory, error))?;
        buf.resize(len, 0);
        let read = self.whole.read_at(pos, &mut buf)?;
        buf.truncate(read);
        Ok(buf)
    }
}

impl AsFd for BlockingReader {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.loan().as_fd()
    }
}

impl AsRawFd for BlockingReader {
    fn as_raw_fd(&self) -> RawFd {
        self.loan().as_raw_fd()
    }
}

impl fmt::Debug for BlockingReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlockingReader")
            .field("loan", self.loan())
            .field("region", &self.lent.region)
            .finish()
    }
}
