//! Lending a glommio [`DmaFile`]'s fd to other threads without `dup()`.
//!
//! A glommio server keeps its `DmaFile`s on executor threads; when a request's answer
//! is "read this range later, on a worker thread" (or `sendfile` it), the hand-off
//! today is a `dup()`. [`LentDmaFile`] wraps the `DmaFile` and lends its one fd
//! instead: loans, local loans, tickets and raw tokens behave exactly as for a
//! [`Lender`] (it is one, see [`LentDmaFile::lender`]), while the executor keeps
//! using the `DmaFile` itself through [`LentDmaFile::dma`]. Nothing of glommio's I/O
//! is reimplemented here.
//!
//! Closing is async and well-ordered: [`LentDmaFile::close`] waits, without polling,
//! until every loan is back (the returning thread wakes the executor), then closes
//! through glommio's own `DmaFile::close` and returns its result. Dropping the
//! wrapper with loans out defers the close to the last loan. In every path the fd is
//! closed exactly once; SAFETY.md (section "glommio adapter") says why.
//!
//! ```no_run
//! use fdlend::glommio::LentDmaFile;
//! use glommio::{io::DmaFile, LocalExecutorBuilder, Placement};
//!
//! let executor = LocalExecutorBuilder::new(Placement::Unbound)
//!     .io_memory(2 << 20)
//!     .make()
//!     .unwrap();
//! executor.run(async {
//!     let file = LentDmaFile::new(DmaFile::open("data.bin").await.unwrap()).unwrap();
//!     let loan = file.loan().unwrap();
//!     let worker = std::thread::spawn(move || {
//!         let mut buf = [0; 16];
//!         nix::sys::uio::pread(&loan, &mut buf, 4096).map(|n| buf[..n].to_vec())
//!     });
//!     // The executor keeps reading through glommio meanwhile.
//!     let head = file.dma().read_at(0, 512).await.unwrap();
//!     assert!(head.len() <= 512);
//!     // Resolves once the worker's loan is back, then closes through glommio.
//!     file.close().await.unwrap();
//!     worker.join().unwrap().unwrap();
//! });
//! ```
//!
//! # Polled I/O on virtual disks (glommio issue #605)
//!
//! glommio decides per block device, at the first `DmaFile` opened on it, whether
//! reads go to its polled (`IORING_SETUP_IOPOLL`) ring: it issues one real read
//! there and turns polling off if that fails (`Reactor::probe_iopoll_support`,
//! cached per device). #605 is the case where that verdict is wrong and later reads
//! fail with `EOPNOTSUPP` (errno 95). On this project's machine (a virtio disk with
//! no poll queues, `/sys/block/vda/queue/io_poll` = 0, Linux 6.18), a polled
//! `O_DIRECT` read completes with `-EOPNOTSUPP`, the probe sees it, and glommio
//! serves every read on its main (interrupt-driven) ring: `DmaFile::open` and
//! `read_at` work with no setting at all (`tests/glommio_adapter.rs` prints the
//! per-ring read counts). Three things to keep it that way:
//! - open for reading with `DmaFile::open` (readable): the probe reads, so a
//!   write-only `DmaFile::create` probes with `EBADF` and glommio caches "not
//!   pollable" for the whole device (glommio #670) — harmless here, wrong on NVMe;
//! - keep the files on a real disk: on tmpfs glommio skips `O_DIRECT` entirely;
//! - on a device where the probe does pass but reads later fail with
//!   `EOPNOTSUPP`, opening any file of that device write-only first (as above)
//!   forces the main ring, since the cached verdict is per device.
//!
//! Nothing in this adapter depends on the ring glommio picked: lent fds are read
//! with plain `pread`/`sendfile` on other threads (`O_DIRECT` rules apply: glommio
//! sets `O_DIRECT` on the fd, so buffers, offsets and lengths must be aligned).

use crate::{LendError, Lender, Loan, LocalLoan, Reclaim, Ticket};
use ::glommio::io::{DmaFile, OwnedDmaFile};
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
/// loan), and leaks the `DmaFile`'s path buffer (about the path's length in bytes):
/// glommio offers no way to take a `DmaFile` apart without closing its fd otherwise.
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
/// is gone) and forgets the fd.
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
            // `OwnedDmaFile` takes the fd out of glommio's file (whose drop then
            // does nothing) and releases the reactor handle and the scheduler;
            // forgetting it skips its synchronous close, leaking only the path.
            std::mem::forget(OwnedDmaFile::from(*dma));
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
