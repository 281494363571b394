//! [`BorrowedDmaFile`]: a lent fd read through another executor's own ring.

// Reached only against unpatched glommio, to fail the build with a hint (patch.rs).
use super::checked_iovs::{refused_error, CheckedIovs, Refused};
#[allow(unused_imports)]
use super::patch::UnpatchedGlommio as _;
use super::source::covering;
use super::BorrowSource;
use crate::{LentRegion, Loan};
use ::glommio::io::{DmaFile, IoVec, MergedBufferLimit, ReadAmplificationLimit, ReadResult};
use ::glommio::GlommioError;
use futures_core::Stream;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

// Bound to the executor that made it; only the loan inside travels.
static_assertions::assert_not_impl_any!(BorrowedDmaFile: Send, Sync);

/// A glommio `DmaFile` over a lent fd, on whichever executor made it.
///
/// Made from a [`Loan`] or a [`LentRegion`] (sent from the owner's thread) by
/// [`new`](BorrowedDmaFile::new) inside any glommio executor; its reads go through
/// *that* executor's ring with glommio's own `read_at`, `read_at_aligned` and
/// `read_many` (`O_DIRECT` alignment handled by glommio). No fd is opened or
/// duplicated: it reads the owner's fd, kept open by the loan it holds.
///
/// It never closes the fd. Dropping it gives the fd number up to nobody and returns
/// the loan once no read it started can still reach the kernel: every read future
/// and [`ReadMany`] stream holds the loan too, so the owner's close
/// ([`LentDmaFile::close`](super::LentDmaFile::close)) resolves only after the last
/// of them is gone. Leaking one (`mem::forget`) leaks the loan: the fd then stays
/// open, never read through a reused number.
///
/// Making one costs a `statx`, an `fcntl` and glommio's cached device lookups:
/// 0.5–0.7 µs on this project's machine, against 0.2–0.3 µs for `dup` + `close` in
/// the same run. It saves the fd, not CPU: for many regions of one file, keep one
/// per file on the executor (one loan) and read the regions with `read_at`.
///
/// `!Send` (it is bound to its executor's reactor). Reads after that executor is
/// gone panic inside glommio; dropping it is fine anywhere on its thread.
pub struct BorrowedDmaFile {
    // `Some` until drop, which takes it and gives the fd up without closing it. An
    // `Rc` because glommio's `read_many` wants one; clones live only inside
    // `ReadMany` streams, which borrow `self`.
    dma: Option<Rc<DmaFile>>,
    // Shared with every read future and stream started here: the fd stays open
    // while any of them, or `self`, is alive.
    lent: Rc<BorrowSource>,
}

impl BorrowedDmaFile {
    /// A `DmaFile` over the lent fd, bound to the current executor. Must be awaited
    /// inside a glommio executor (glommio panics otherwise).
    ///
    /// Reads the fd's metadata (`fstat`, flags) and, if its `O_DIRECT`
    /// file is this thread's first on that device, runs glommio's polled-I/O probe on
    /// it (an empty file is never probed; see the [module docs](super)). Refused,
    /// with an `InvalidInput` error, for an fd that is not a regular file or a block
    /// device (a pipe or socket has no offsets to read at). Failing, the loan comes
    /// back in the error, untouched.
    pub async fn new(lent: impl Into<BorrowSource>) -> Result<BorrowedDmaFile, BorrowDmaError> {
        let lent = lent.into();
        let fd = lent.loan().as_raw_fd();
        // `DmaFile::from_raw_fd` (vendored glommio, FDLEND-PATCH.md) needs
        // - `fd` open while the file or any I/O it started exists: the loan in `lent`
        //   keeps it open; `lent` is moved into the result below and shared with every
        //   read future and stream, and `Drop` gives the file up before letting go of
        //   it (reads still in the kernel hold their own file reference; reads never
        //   submitted were cancelled with their futures);
        // - the file never closes `fd`: it is never closed or dropped as a `DmaFile`,
        //   only given up with `into_raw_fd` in `Drop`. On error no file was built.
        // SAFETY: both obligations hold, as argued just above.
        match unsafe { DmaFile::from_raw_fd(fd) }.await {
            Ok(dma) => Ok(BorrowedDmaFile {
                dma: Some(Rc::new(dma)),
                lent: Rc::new(lent),
            }),
            Err(error) => Err(BorrowDmaError { error, lent }),
        }
    }

    fn dma(&self) -> &Rc<DmaFile> {
        self.dma
            .as_ref()
            .expect("fdlend: DmaFile present until drop")
    }

    /// Reads `size` bytes at `pos` through this executor's ring, at any alignment:
    /// one aligned glommio read of the covering blocks, trimmed without a copy.
    /// Short at end of file. (glommio 0.9's own `DmaFile::read_at` trims by the size
    /// asked instead of the size read, so a read crossing end of file comes back
    /// padded with zeroes; this one does not.)
    pub async fn read_at(&self, pos: u64, size: usize) -> ::glommio::Result<ReadResult, ()> {
        let _lent = Rc::clone(&self.lent);
        let dma = self.dma();
        let (start, span, skip) = covering(pos, size, dma.alignment())?;
        let covering = dma.read_at_aligned(start, span).await?;
        let len = size.min(covering.len().saturating_sub(skip));
        Ok(ReadResult::slice(&covering, skip, len).expect("fdlend: a slice of what was read"))
    }

    /// As [`read_at`](BorrowedDmaFile::read_at) with `pos` (and, for `O_DIRECT`,
    /// `size`) already aligned to [`alignment`](BorrowedDmaFile::alignment): no
    /// widening, no copy.
    pub async fn read_at_aligned(
        &self,
        pos: u64,
        size: usize,
    ) -> ::glommio::Result<ReadResult, ()> {
        let _lent = Rc::clone(&self.lent);
        covering(pos, size, 1)?;
        self.dma().read_at_aligned(pos, size).await
    }

    /// The region's bytes, for one made from a [`LentRegion`]; for a plain loan,
    /// an `InvalidInput` error.
    pub async fn read_region(&self) -> ::glommio::Result<ReadResult, ()> {
        let Some(region) = self.region() else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "BorrowedDmaFile::read_region: made from a Loan, not a LentRegion",
            )
            .into());
        };
        let len = usize::try_from(region.len()).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "region longer than this machine's address space",
            )
        })?;
        self.read_at(region.offset(), len).await
    }

    /// glommio's `read_many`: many reads, coalesced and deduplicated, results in
    /// order; see `DmaFile::read_many` for the limits. A read crossing end of file
    /// comes back short, trimmed at the file's size when the call was made (glommio
    /// 0.9 pads it with zeroes instead). An iovec whose range ends past the largest
    /// file offset ends the request: the results of the iovecs before it, then an
    /// `InvalidInput` error (glommio would panic on it).
    pub fn read_many<'a, V, S>(
        &'a self,
        iovs: S,
        buffer_limit: MergedBufferLimit,
        read_amp_limit: ReadAmplificationLimit,
    ) -> ReadMany<'a, V>
    where
        V: IoVec + Unpin + 'a,
        S: Stream<Item = V> + Unpin + 'a,
    {
        // Where glommio's results stop being file data. If fstat fails on a lent fd
        // (it cannot while the loan holds it), nothing is trimmed.
        let end = nix::sys::stat::fstat(self.lent.loan())
            .map(|stat| stat.st_size as u64)
            .unwrap_or(u64::MAX);
        let refused = Refused::default();
        let iovs = CheckedIovs::new(iovs, Rc::clone(&refused));
        ReadMany {
            inner: Box::pin(self.dma().read_many(iovs, buffer_limit, read_amp_limit)),
            end,
            refused,
            _lent: Rc::clone(&self.lent),
        }
    }

    /// The alignment glommio uses for this file (the device's logical block, at least
    /// 512).
    pub fn alignment(&self) -> u64 {
        self.dma().alignment()
    }

    /// True when this executor reads the file on its polled ring (see the
    /// [module docs](super) on the probe).
    pub fn is_pollable(&self) -> bool {
        self.dma().is_pollable()
    }

    /// The region it was made from, if any.
    pub fn region(&self) -> Option<&LentRegion> {
        match &*self.lent {
            BorrowSource::Region(region) => Some(region),
            BorrowSource::Loan(_) => None,
        }
    }

    /// The loan it holds.
    pub fn loan(&self) -> &Loan {
        self.lent.loan()
    }
}

impl Drop for BorrowedDmaFile {
    fn drop(&mut self) {
        if let Some(dma) = self.dma.take() {
            match Rc::try_unwrap(dma) {
                // Give the fd up without a close; glommio keeps nothing of it.
                Ok(dma) => {
                    let _ = dma.into_raw_fd();
                }
                // Another `Rc` lives only in a `ReadMany` stream that outlived its
                // borrow of `self`, which only `mem::forget` allows: that stream is
                // leaked, so this file is never dropped by it (never closed), and it
                // holds a clone of `lent` (the fd stays open).
                Err(leaked) => drop(leaked),
            }
        }
        // `lent` drops after this: the loan returns once no read can reach the fd.
    }
}

impl AsFd for BorrowedDmaFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.lent.loan().as_fd()
    }
}

impl AsRawFd for BorrowedDmaFile {
    fn as_raw_fd(&self) -> RawFd {
        self.lent.loan().as_raw_fd()
    }
}

impl fmt::Debug for BorrowedDmaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BorrowedDmaFile")
            .field("lent", &*self.lent)
            .field("alignment", &self.alignment())
            .field("pollable", &self.is_pollable())
            .finish()
    }
}

/// The results of [`BorrowedDmaFile::read_many`], in the order asked: each
/// `(iovec, bytes)`. Holds the loan while it lives.
pub struct ReadMany<'a, V> {
    inner: Pin<Box<dyn Stream<Item = ReadManyItem<V>> + 'a>>,
    end: u64,
    refused: Refused,
    _lent: Rc<BorrowSource>,
}

/// One answer of [`ReadMany`]: the iovec asked and its bytes.
type ReadManyItem<V> = ::glommio::Result<(V, ReadResult), ()>;

impl<V: IoVec> Stream for ReadMany<'_, V> {
    type Item = ReadManyItem<V>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let end = self.end;
        let next = std::task::ready!(self.inner.as_mut().poll_next(cx));
        if next.is_none() {
            if let Some((pos, size)) = self.refused.take() {
                return Poll::Ready(Some(Err(refused_error(pos, size).into())));
            }
        }
        Poll::Ready(next.map(|result| {
            result.map(|(iovec, bytes)| {
                let in_file = end.saturating_sub(iovec.pos());
                let len = bytes
                    .len()
                    .min(usize::try_from(in_file).unwrap_or(usize::MAX));
                let bytes = ReadResult::slice(&bytes, 0, len).expect("fdlend: a prefix");
                (iovec, bytes)
            })
        }))
    }
}

impl<V> fmt::Debug for ReadMany<'_, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadMany").finish_non_exhaustive()
    }
}

/// [`BorrowedDmaFile::new`] failed: glommio's error, and the loan, untouched.
pub struct BorrowDmaError {
    error: GlommioError<()>,
    lent: BorrowSource,
}

impl BorrowDmaError {
    /// What glommio reported.
    pub fn error(&self) -> &GlommioError<()> {
        &self.error
    }

    /// The loan or region, still holding the fd open.
    pub fn into_source(self) -> BorrowSource {
        self.lent
    }
}

impl fmt::Debug for BorrowDmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BorrowDmaError")
            .field("error", &self.error)
            .field("lent", &self.lent)
            .finish()
    }
}

impl fmt::Display for BorrowDmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read the lent fd {} through glommio: {}",
            self.lent.loan().as_raw_fd(),
            self.error
        )
    }
}

impl std::error::Error for BorrowDmaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
