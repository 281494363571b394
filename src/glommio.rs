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
//! glommio probes each block device once, at the first `DmaFile` opened on it
//! (`Reactor::probe_iopoll_support`, cached per device), by issuing a real read on
//! its poll ring; only `ENOTSUP` (= `EOPNOTSUPP` on Linux) or another error turns
//! polling off. The probe's verdict decides the ring for every later read of every
//! file on that device. On a virtio disk whose queue has no poll queues
//! (`/sys/block/vda/queue/io_poll` = 0), Linux 6.x fails the probe with
//! `EOPNOTSUPP`, so glommio falls back to its interrupt-driven main ring and reads
//! work. Two traps: the probe needs a *readable* fd (a `DmaFile::create`, write-only,
//! probes with `EBADF`; glommio logs an error and caches "not pollable", glommio issue
//! #670, which is harmless for reads), and the probe must not be done on `tmpfs`,
//! which refuses `O_DIRECT` altogether (glommio then never opens the file
//! `O_DIRECT`). Nothing in this adapter depends on the ring glommio picked: lent fds
//! are read with plain `pread`/`sendfile` on other threads.

use crate::{LendError, Lender, Loan, LocalLoan, Ticket};
use ::glommio::io::{DmaFile, OwnedDmaFile};
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

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
                dma: Unclosing(Some(dma)),
                lender,
            }),
            Err(refused) => {
                let error = refused.error();
                // The DmaFile remains the fd's only owner.
                let _ = refused.into_fd().into_raw_fd();
                Err(RegisterDmaError { error, dma })
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
    /// as dropping the wrapper does.
    pub async fn reclaim(self) -> DmaFile {
        let LentDmaFile { mut dma, lender } = self;
        let fd = lender.reclaim().await;
        // Every loan is back and fdlend's slot is free: give up its ownership so
        // the DmaFile is the fd's one owner again. No await point from here to the
        // hand-over, so a cancelled future cannot split them.
        let _ = fd.into_raw_fd();
        dma.take()
    }

    /// Waits for every loan to come back, then closes the file through glommio's
    /// own [`DmaFile::close`] and returns its result.
    pub async fn close(self) -> ::glommio::Result<(), ()> {
        self.reclaim().await.close().await
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
struct Unclosing(Option<DmaFile>);

impl Unclosing {
    fn get(&self) -> &DmaFile {
        self.0.as_ref().expect("fdlend: DmaFile present until taken")
    }

    fn take(&mut self) -> DmaFile {
        self.0.take().expect("fdlend: DmaFile taken once")
    }
}

impl Drop for Unclosing {
    fn drop(&mut self) {
        if let Some(dma) = self.0.take() {
            // `OwnedDmaFile` takes the fd out of glommio's file (whose drop then
            // does nothing) and releases the reactor handle and the scheduler;
            // forgetting it skips its synchronous close, leaking only the path.
            std::mem::forget(OwnedDmaFile::from(dma));
        }
    }
}

/// [`LentDmaFile::new`] refused: why, and the `DmaFile`, untouched.
pub struct RegisterDmaError {
    error: LendError,
    dma: DmaFile,
}

impl RegisterDmaError {
    /// Why fdlend refused the fd.
    pub fn error(&self) -> LendError {
        self.error
    }

    /// The `DmaFile`, still open and owned by glommio alone.
    pub fn into_dma_file(self) -> DmaFile {
        self.dma
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
