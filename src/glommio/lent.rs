//! [`LentDmaFile`]: the executor's own `DmaFile`, its fd lent through a [`Lender`].

use super::closer::Slot;
use crate::{LendError, Lender, LentRegion, Loan, LocalLoan, RegionError, Ticket, TimedOut};
use ::glommio::io::DmaFile;
use std::fmt;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

/// A glommio [`DmaFile`] whose fd is lent to other threads.
///
/// The executor uses the file through [`dma`](LentDmaFile::dma); other threads get
/// [`Loan`]s (or [`Ticket`]s) from [`loan`](LentDmaFile::loan) and read with `pread`,
/// `O_DIRECT` reads or `sendfile` on the very same fd. `!Send`, like both halves.
///
/// The fd is always closed by glommio itself, on this executor, never by fdlend's
/// `close(2)`: glommio queues its close behind every op of the file it still has
/// queued (a write future polled once and then forgotten, say), so such an op can
/// never land on a later file that reuses the fd number. Close it with
/// [`close`](LentDmaFile::close) (or the bounded
/// [`close_timeout`](LentDmaFile::close_timeout)). Dropping it instead closes
/// through glommio at once if nothing is lent, else from a task on this executor once
/// the last loan is back.
///
/// If the executor is dropped while that task (or a `close` future) still waits,
/// glommio leaks the task; the wait is then given up when this thread exits, and
/// the last loan closes the fd with `close(2)` (the executor, and every op it had
/// queued, is gone by then).
pub struct LentDmaFile {
    // Both `Some` until a consuming method or `Drop` takes them. The lender is never
    // dropped as is (its drop would `close(2)` the fd glommio owns).
    dma: Option<Box<DmaFile>>,
    lender: Option<Lender>,
    slot: Rc<Slot>,
}

impl LentDmaFile {
    /// Starts lending `dma`'s fd. Refused, with the `DmaFile` handed back untouched,
    /// when fdlend cannot track that fd (see [`Lender::new`]).
    ///
    /// # Panics
    ///
    /// Outside a glommio executor: it spawns one small task per file, which closes
    /// the file after the last loan if the wrapper is dropped first.
    pub fn new(dma: DmaFile) -> Result<LentDmaFile, RegisterDmaError> {
        Self::with_max_loans(dma, Lender::MAX_LOANS)
    }

    /// As [`new`](LentDmaFile::new), with at most `max_loans` loans out at once.
    pub fn with_max_loans(dma: DmaFile, max_loans: u32) -> Result<LentDmaFile, RegisterDmaError> {
        // Spawned first: glommio panics outside an executor, and nothing may own the
        // fd twice while a panic unwinds.
        let slot = Slot::spawn();
        // SAFETY: a second owner of the DmaFile's fd, for the Lender's bookkeeping
        // only; exactly one of the two closes it. Every path that retires the Lender
        // (`reclaim`, `into_dma_file`, `Drop`, a refused registration) takes the fd
        // back with `into_owned_fd`/`reclaim` and forgets it, so the DmaFile closes
        // it once through glommio. The two paths where fdlend closes instead (local
        // loans refusing a reclaim; a wait stranded by a dropped executor, closer.rs)
        // forget the DmaFile or drop it with its reactor gone, so glommio does not.
        // SAFETY.md, "glommio adapter".
        let shared = unsafe { OwnedFd::from_raw_fd(dma.as_raw_fd()) };
        match Lender::with_max_loans(shared, max_loans) {
            Ok(lender) => Ok(LentDmaFile {
                dma: Some(Box::new(dma)),
                lender: Some(lender),
                slot,
            }),
            Err(refused) => {
                slot.finish();
                let error = refused.error();
                // The DmaFile remains the fd's only owner.
                let _ = refused.into_fd().into_raw_fd();
                Err(RegisterDmaError {
                    error,
                    dma: Box::new(dma),
                })
            }
        }
    }

    /// The `DmaFile`, for glommio I/O on the executor.
    pub fn dma(&self) -> &DmaFile {
        self.dma
            .as_ref()
            .expect("fdlend: the DmaFile is present until consumed")
    }

    /// The [`Lender`] of the fd: everything a lender hands out works here.
    pub fn lender(&self) -> &Lender {
        self.lender
            .as_ref()
            .expect("fdlend: the Lender is present until consumed")
    }

    /// A counted loan for any thread; see [`Lender::loan`].
    pub fn loan(&self) -> Result<Loan, LendError> {
        self.lender().loan()
    }

    /// A loan for the executor's own thread, with no atomic operation; see
    /// [`Lender::local_loan`].
    pub fn local_loan(&self) -> LocalLoan {
        self.lender().local_loan()
    }

    /// A region of the file with a new loan, for [`fdlend::io`](crate::io) reads and
    /// sends or a reader on another executor; see [`Lender::region`].
    pub fn region(&self, offset: u64, len: u64) -> Result<LentRegion, RegionError> {
        self.lender().region(offset, len)
    }

    /// A ticket that holds nothing open; see [`Lender::ticket`].
    pub fn ticket(&self) -> Ticket {
        self.lender().ticket()
    }

    /// Loans, raw tokens and local loans outstanding right now.
    pub fn outstanding(&self) -> usize {
        self.lender().outstanding()
    }

    /// Takes the file apart; `Drop` then finds nothing to do.
    fn into_parts(mut self) -> (Box<DmaFile>, Lender, Rc<Slot>) {
        let dma = self.dma.take().expect("fdlend: consumed once");
        let lender = self.lender.take().expect("fdlend: consumed once");
        (dma, lender, Rc::clone(&self.slot))
    }

    /// Stops lending and resolves to the `DmaFile`, still open and again the fd's
    /// only owner, once every loan is back. New loans and ticket pins are refused
    /// meanwhile. The wait is woken by the thread returning the last loan.
    ///
    /// Dropped before it resolves, the future hands the file to the close that
    /// dropping the wrapper does. Leaked with its executor (glommio leaks a task
    /// still waiting when its executor is dropped), the wait is given up when this
    /// thread exits and the last loan closes the fd.
    ///
    /// Awaited on this thread while local loans of the file are alive here, it
    /// cannot finish: it fails with `LocalLoansOutstanding` and the last local loan
    /// closes the fd.
    pub async fn reclaim(self) -> Result<DmaFile, LendError> {
        let (dma, lender, slot) = self.into_parts();
        slot.begin(lender.reclaim());
        let mut waiting = ParkOnDrop {
            dma: Some(dma),
            slot: &slot,
        };
        let reclaimed = std::future::poll_fn(|cx| slot.poll_reclaim(cx)).await;
        waiting.reclaimed(reclaimed)
    }

    /// As [`reclaim`](LentDmaFile::reclaim), giving up after `timeout` (a glommio
    /// timer): then the wrapper comes back, lending again, in a [`TimedOut`] that
    /// says how many loans are still out. A loan that never returns (its holder's
    /// task leaked with a dropped executor, say) can hold a close forever; this one
    /// returns, with the fd still open and still this file.
    pub async fn reclaim_timeout(
        self,
        timeout: Duration,
    ) -> Result<Result<DmaFile, LendError>, TimedOut<LentDmaFile>> {
        let (dma, lender, slot) = self.into_parts();
        slot.begin(lender.reclaim());
        let mut waiting = ParkOnDrop {
            dma: Some(dma),
            slot: &slot,
        };
        let mut timer = pin!(::glommio::timer::sleep(timeout));
        let reclaimed = std::future::poll_fn(|cx| match slot.poll_reclaim(cx) {
            Poll::Ready(reclaimed) => Poll::Ready(Some(reclaimed)),
            Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
        })
        .await;
        if let Some(reclaimed) = reclaimed {
            return Ok(waiting.reclaimed(reclaimed));
        }
        let reclaim = slot.take_reclaim().expect("fdlend: the wait begun above");
        match reclaim.abort() {
            Ok(lender) => {
                let dma = waiting.dma.take().expect("fdlend: taken once");
                let (fd, outstanding) = (lender.as_raw_fd(), lender.outstanding());
                let file = LentDmaFile {
                    dma: Some(dma),
                    lender: Some(lender),
                    slot: Rc::clone(&slot),
                };
                Err(TimedOut::new(file, fd, outstanding))
            }
            // The last loan came back as the timer fired.
            Err(reclaimed) => Ok(waiting.reclaimed(reclaimed)),
        }
    }

    /// As [`close`](LentDmaFile::close), giving up after `timeout`: the wrapper
    /// comes back in a [`TimedOut`], lending again, and nothing is closed. See
    /// [`reclaim_timeout`](LentDmaFile::reclaim_timeout).
    pub async fn close_timeout(
        self,
        timeout: Duration,
    ) -> Result<::glommio::Result<(), ()>, TimedOut<LentDmaFile>> {
        match self.reclaim_timeout(timeout).await? {
            Ok(dma) => Ok(dma.close().await),
            Err(error) => Ok(Err(::glommio::GlommioError::IoError(error.into()))),
        }
    }

    /// Waits for every loan to come back, then closes the file through glommio's
    /// own [`DmaFile::close`] and returns its result (`LocalLoansOutstanding`, as an
    /// I/O error, as for [`reclaim`](LentDmaFile::reclaim)).
    pub async fn close(self) -> ::glommio::Result<(), ()> {
        match self.reclaim().await {
            Ok(dma) => dma.close().await,
            Err(error) => Err(::glommio::GlommioError::IoError(error.into())),
        }
    }

    /// The `DmaFile` back at once if nothing is lent (tickets turn stale); else the
    /// wrapper, untouched.
    pub fn into_dma_file(self) -> Result<DmaFile, LentDmaFile> {
        let (dma, lender, slot) = self.into_parts();
        match lender.into_owned_fd() {
            Ok(fd) => {
                let _ = fd.into_raw_fd();
                slot.finish();
                Ok(*dma)
            }
            Err(lender) => Err(LentDmaFile {
                dma: Some(dma),
                lender: Some(lender),
                slot,
            }),
        }
    }
}

impl Drop for LentDmaFile {
    fn drop(&mut self) {
        let (Some(dma), Some(lender)) = (self.dma.take(), self.lender.take()) else {
            return;
        };
        match lender.into_owned_fd() {
            Ok(fd) => {
                // Nothing lent: the DmaFile is the one owner again; its drop queues
                // glommio's close behind the file's pending ops.
                let _ = fd.into_raw_fd();
                self.slot.finish();
                drop(dma);
            }
            Err(lender) => {
                self.slot.begin(lender.reclaim());
                self.slot.park(*dma);
            }
        }
    }
}

/// The `DmaFile` of a [`LentDmaFile::reclaim`] in progress: parked with the closer
/// if the future is dropped before the loans are back.
struct ParkOnDrop<'a> {
    dma: Option<Box<DmaFile>>,
    slot: &'a Slot,
}

impl ParkOnDrop<'_> {
    /// The outcome of a finished wait: the `DmaFile`, again the fd's one owner.
    fn reclaimed(&mut self, reclaimed: Result<OwnedFd, LendError>) -> Result<DmaFile, LendError> {
        let dma = self.dma.take().expect("fdlend: taken once");
        self.slot.finish();
        match reclaimed {
            Ok(fd) => {
                // Every loan is back and fdlend's slot is free: give up its ownership
                // so the DmaFile is the fd's one owner again. No await point from here
                // to the hand-over, so a cancelled future cannot split them.
                let _ = fd.into_raw_fd();
                Ok(*dma)
            }
            Err(error) => {
                // The last local loan closes the fd (fdlend's deferred close); the
                // DmaFile must not close it too.
                std::mem::forget(dma);
                Err(error)
            }
        }
    }
}

impl Drop for ParkOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(dma) = self.dma.take() {
            self.slot.park(*dma);
        }
    }
}

impl AsRef<DmaFile> for LentDmaFile {
    fn as_ref(&self) -> &DmaFile {
        self.dma()
    }
}

impl AsFd for LentDmaFile {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.lender().as_fd()
    }
}

impl AsRawFd for LentDmaFile {
    fn as_raw_fd(&self) -> RawFd {
        self.lender().as_raw_fd()
    }
}

impl fmt::Debug for LentDmaFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LentDmaFile")
            .field("path", &self.dma().path().map(|p| p.to_path_buf()))
            .field("lender", &self.lender)
            .finish()
    }
}

/// [`LentDmaFile::new`] refused: why, and the `DmaFile`, untouched.
pub struct RegisterDmaError {
    error: LendError,
    dma: Box<DmaFile>,
}

impl RegisterDmaError {
    /// Why fdlend refused the fd.
    pub fn error(&self) -> LendError {
        self.error
    }

    /// The `DmaFile`, still open and owned by glommio alone.
    pub fn into_dma_file(self) -> DmaFile {
        *self.dma
    }
}

impl fmt::Debug for RegisterDmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterDmaError")
            .field("error", &self.error)
            .field("fd", &self.dma.as_raw_fd())
            .finish()
    }
}

impl fmt::Display for RegisterDmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot lend the DmaFile's fd: {}", self.error)
    }
}

impl std::error::Error for RegisterDmaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}
