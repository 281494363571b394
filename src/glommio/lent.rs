//! [`LentDmaFile`]: the executor's own `DmaFile`, its fd lent through a [`Lender`].

use crate::{LendError, Lender, LentRegion, Loan, LocalLoan, Reclaim, RegionError, Ticket};
use ::glommio::io::DmaFile;
use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll};

/// A glommio [`DmaFile`] whose fd is lent to other threads.
///
/// The executor uses the file through [`dma`](LentDmaFile::dma); other threads get
/// [`Loan`]s (or [`Ticket`]s) from [`loan`](LentDmaFile::loan) and read with `pread`,
/// `O_DIRECT` reads or `sendfile` on the very same fd. `!Send`, like both halves.
///
/// Close it with [`close`](LentDmaFile::close). Dropping it instead is a deferred
/// close by fdlend (now if nothing is lent, else on the thread of the last returning
/// loan).
pub struct LentDmaFile {
    // Declared first so it is dropped first: glommio lets go of the fd number
    // before fdlend may close it.
    dma: Unclosing,
    lender: Lender,
}

impl LentDmaFile {
    /// Starts lending `dma`'s fd. Refused, with the `DmaFile` handed back untouched,
    /// when fdlend cannot track that fd (see [`Lender::new`]).
    pub fn new(dma: DmaFile) -> Result<LentDmaFile, RegisterDmaError> {
        Self::with_max_loans(dma, Lender::MAX_LOANS)
    }

    /// As [`new`](LentDmaFile::new), with at most `max_loans` loans out at once.
    pub fn with_max_loans(dma: DmaFile, max_loans: u32) -> Result<LentDmaFile, RegisterDmaError> {
        // SAFETY: a second owner of the DmaFile's fd, for the Lender's bookkeeping
        // only. From here on exactly one of the two closes it: `Unclosing` keeps
        // glommio from ever closing while the Lender exists, and every path that
        // retires the Lender (`reclaim`, `into_dma_file`, a refused registration)
        // forgets the OwnedFd before glommio gets the fd back. SAFETY.md, "glommio
        // adapter".
        let shared = unsafe { OwnedFd::from_raw_fd(dma.as_raw_fd()) };
        match Lender::with_max_loans(shared, max_loans) {
            Ok(lender) => Ok(LentDmaFile {
                dma: Unclosing(Some(Box::new(dma))),
                lender,
            }),
            Err(refused) => {
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
        self.dma.get()
    }

    /// The [`Lender`] of the fd: everything a lender hands out works here.
    pub fn lender(&self) -> &Lender {
        &self.lender
    }

    /// A counted loan for any thread; see [`Lender::loan`].
    pub fn loan(&self) -> Result<Loan, LendError> {
        self.lender.loan()
    }

    /// A loan for the executor's own thread, with no atomic operation; see
    /// [`Lender::local_loan`].
    pub fn local_loan(&self) -> LocalLoan {
        self.lender.local_loan()
    }

    /// A region of the file with a new loan, for [`fdlend::io`](crate::io) reads and
    /// sends or a [`BorrowedDmaFile`](super::BorrowedDmaFile) on another executor;
    /// see [`Lender::region`].
    pub fn region(&self, offset: u64, len: u64) -> Result<LentRegion, RegionError> {
        self.lender.region(offset, len)
    }

    /// A ticket that holds nothing open; see [`Lender::ticket`].
    pub fn ticket(&self) -> Ticket {
        self.lender.ticket()
    }

    /// Loans, raw tokens and local loans outstanding right now.
    pub fn outstanding(&self) -> usize {
        self.lender.outstanding()
    }

    /// Stops lending and resolves to the `DmaFile`, still open and again the fd's
    /// only owner, once every loan is back. New loans and ticket pins are refused
    /// meanwhile. The wait is woken by the thread returning the last loan.
    ///
    /// Dropped before it resolves, the future hands the close to the last loan,
    /// as dropping the wrapper does. glommio does not drop a task that is waiting
    /// when its executor is dropped (the task is leaked); the wait is then given up
    /// when the executor's thread exits, and the last loan closes the fd.
    ///
    /// Awaited on this thread while local loans of the file are alive here, it
    /// cannot finish: it fails with `LocalLoansOutstanding` and the last local loan
    /// closes the fd.
    pub async fn reclaim(self) -> Result<DmaFile, LendError> {
        let LentDmaFile { mut dma, lender } = self;
        let fd = Reclaiming::new(lender.reclaim()).await?;
        // Every loan is back and fdlend's slot is free: give up its ownership so
        // the DmaFile is the fd's one owner again. No await point from here to the
        // hand-over, so a cancelled future cannot split them.
        let _ = fd.into_raw_fd();
        Ok(dma.take())
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
        let LentDmaFile { mut dma, lender } = self;
        match lender.into_owned_fd() {
            Ok(fd) => {
                let _ = fd.into_raw_fd();
                Ok(dma.take())
            }
            Err(lender) => Err(LentDmaFile { dma, lender }),
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
        self.lender.as_fd()
    }
}

impl AsRawFd for LentDmaFile {
    fn as_raw_fd(&self) -> RawFd {
        self.lender.as_raw_fd()
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

/// A `DmaFile` whose drop never closes its fd: while the wrapper lives, fdlend
/// decides the close. Dropping it detaches the file from glommio (which would
/// otherwise queue an io_uring close on its reactor, or leak the fd if the reactor
/// is gone) and gives the fd number up.
// Boxed: a `DmaFile` is ~120 bytes, and the wrapper travels in `Result`s.
struct Unclosing(Option<Box<DmaFile>>);

impl Unclosing {
    fn get(&self) -> &DmaFile {
        self.0
            .as_ref()
            .expect("fdlend: DmaFile present until taken")
    }

    fn take(&mut self) -> DmaFile {
        *self.0.take().expect("fdlend: DmaFile taken once")
    }
}

impl Drop for Unclosing {
    fn drop(&mut self) {
        if let Some(dma) = self.0.take() {
            // The vendored glommio's `into_raw_fd` (FDLEND-PATCH.md) takes the fd out
            // of the file, so its drop queues no close, and frees everything else.
            let _ = dma.into_raw_fd();
        }
    }
}

/// A [`Reclaim`] that the owner's thread gives up when it exits, in case the task
/// awaiting it was leaked with its executor and will never be polled or dropped.
struct Reclaiming {
    pending: Rc<RefCell<Option<Reclaim>>>,
}

impl Reclaiming {
    fn new(reclaim: Reclaim) -> Reclaiming {
        let pending = Rc::new(RefCell::new(Some(reclaim)));
        // Fails only while this thread's locals are being destroyed: the future is
        // then dropped with the thread's last frames anyway.
        let _ = STRANDED.try_with(|stranded| stranded.watch(Rc::downgrade(&pending)));
        Reclaiming { pending }
    }
}

impl Future for Reclaiming {
    type Output = Result<OwnedFd, LendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut pending = self.pending.borrow_mut();
        let reclaim = pending
            .as_mut()
            .expect("Reclaiming polled after completion");
        let fd = std::task::ready!(Pin::new(reclaim).poll(cx));
        *pending = None;
        Poll::Ready(fd)
    }
}

thread_local! {
    static STRANDED: Stranded = const { Stranded { watched: RefCell::new(Vec::new()) } };
}

/// The reclaims started on this thread whose futures may still be alive.
struct Stranded {
    watched: RefCell<Vec<Weak<RefCell<Option<Reclaim>>>>>,
}

impl Stranded {
    fn watch(&self, pending: Weak<RefCell<Option<Reclaim>>>) {
        let mut watched = self.watched.borrow_mut();
        // Finished or dropped futures leave dead entries; pruning at powers of two
        // keeps the list proportional to the live ones at amortized O(1).
        if watched.len() >= 16 && watched.len().is_power_of_two() {
            watched.retain(|entry| entry.strong_count() > 0);
        }
        watched.push(pending);
    }
}

impl Drop for Stranded {
    fn drop(&mut self) {
        for entry in self.watched.get_mut().drain(..) {
            if let Some(pending) = entry.upgrade() {
                // Its future lives in a task leaked with an executor of this thread:
                // it can never be polled again. Dropping the Reclaim hands the close
                // to the last loan (or closes now if they are all back). The leaked
                // DmaFile stays in `Unclosing` and is never dropped, so glommio
                // never closes the fd too.
                drop(pending.borrow_mut().take());
            }
        }
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
