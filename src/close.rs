//! Finishing a close: who closes the fd once its loans have drained, and how the
//! owner waits for that (blocking, as a future, or by a handle it checks later).
//!
//! The liveness word decides *when* (the release that drains the count); this module
//! decides *who*. A [`CloseSignal`] is left in the file's record before the owner
//! gives up its reference, so the drainer always finds it.
//!
//! No lock here is held while a `Waker` or anything else that can run user code is
//! dropped or woken: a waker may own the last loan, whose drop drains the file and
//! comes back here for the same lock.

use crate::error::LendError;
use crate::fd;
use crate::sync::{current_thread, lock, Arc, Condvar, Mutex, ThreadId};
use nix::errno::Errno;
use std::future::Future;
use std::io;
use std::os::fd::{IntoRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Who calls `close(2)` once the last loan is back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Closer {
    /// Whichever thread returns the last loan (deferred close).
    LastLoan,
    /// The owner, woken by the last loan (`close_wait`, `close_async`).
    Owner,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Stage {
    Lent,
    Drained,
    Closed(Result<(), Errno>),
}

struct Progress {
    closer: Closer,
    stage: Stage,
    waker: Option<Waker>,
    /// The owner's thread while local loans there still hold the owner's reference:
    /// waiting on that thread could never end.
    owner_thread: Option<ThreadId>,
}

/// Shared between the owner and the record of one closing fd.
pub(crate) struct CloseSignal {
    progress: Mutex<Progress>,
    changed: Condvar,
    pub(crate) fd: RawFd,
    /// Local loans alive when the close began, for the error that says so.
    pub(crate) local_loans: usize,
}

impl CloseSignal {
    /// A signal for closing `fd`; `local_loans` of the owner's are alive on this
    /// thread (so waiting here for the drain would never end while they are).
    pub(crate) fn new(closer: Closer, fd: RawFd, local_loans: usize) -> Arc<CloseSignal> {
        Arc::new(CloseSignal {
            progress: Mutex::new(Progress {
                closer,
                stage: Stage::Lent,
                waker: None,
                owner_thread: (local_loans > 0).then(current_thread),
            }),
            changed: Condvar::new(),
            fd,
            local_loans,
        })
    }

    /// The owner's reference is gone (its last local loan was dropped): any thread
    /// may wait for the drain now.
    pub(crate) fn owner_released(&self) {
        lock(&self.progress).owner_thread = None;
    }

    /// Whether waiting in `progress` on this thread could never end.
    fn waits_on_own_loans(&self, progress: &Progress) -> Result<(), LendError> {
        if progress.stage == Stage::Lent && progress.owner_thread == Some(current_thread()) {
            return Err(LendError::LocalLoansOutstanding {
                fd: self.fd,
                count: self.local_loans,
            });
        }
        Ok(())
    }

    /// Called exactly once per incarnation, by the release that drained its count.
    pub(crate) fn drained(&self, fd: RawFd) {
        let waker = {
            let mut progress = lock(&self.progress);
            progress.stage = match progress.closer {
                // SAFETY: the drain killed the record's word, so this thread alone owns `fd`.
                Closer::LastLoan => Stage::Closed(unsafe { fd::close(fd) }),
                Closer::Owner => Stage::Drained,
            };
            progress.waker.take()
        };
        self.changed.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Blocks until `done` holds for the stage; refuses on the owner's thread while
    /// its local loans are alive, since they could never return meanwhile.
    pub(crate) fn wait_until(&self, done: impl Fn(Stage) -> bool) -> Result<Stage, LendError> {
        let stage = self.wait_until_deadline(done, None)?;
        Ok(stage.expect("a wait without a deadline ends only when done"))
    }

    /// As `wait_until`, giving up at `deadline` (`None`: never) with `Ok(None)`.
    pub(crate) fn wait_until_deadline(
        &self,
        done: impl Fn(Stage) -> bool,
        deadline: Option<Instant>,
    ) -> Result<Option<Stage>, LendError> {
        let mut progress = lock(&self.progress);
        loop {
            if done(progress.stage) {
                return Ok(Some(progress.stage));
            }
            self.waits_on_own_loans(&progress)?;
            progress = match deadline {
                None => self
                    .changed
                    .wait(progress)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    self.changed
                        .wait_timeout(progress, left)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
            };
        }
    }

    /// Registers `cx`'s waker unless `done` holds already. The waker is cloned and
    /// the old one dropped with the lock released: both are user code (see the
    /// module docs), and a clone that drops the last loan would come back here.
    pub(crate) fn poll_until(
        &self,
        cx: &mut Context<'_>,
        done: impl Fn(Stage) -> bool,
    ) -> Poll<Result<Stage, LendError>> {
        let mut fresh: Option<Waker> = None;
        loop {
            let mut progress = lock(&self.progress);
            let ready = if done(progress.stage) {
                Some(Ok(progress.stage))
            } else {
                self.waits_on_own_loans(&progress).err().map(Err)
            };
            if let Some(ready) = ready {
                drop(progress);
                drop(fresh);
                return Poll::Ready(ready);
            }
            // `will_wake` only compares pointers: no user code runs here.
            let replaced = match &progress.waker {
                Some(waker) if waker.will_wake(cx.waker()) => None,
                _ => match fresh.take() {
                    Some(waker) => progress.waker.replace(waker),
                    None => {
                        drop(progress);
                        fresh = Some(cx.waker().clone());
                        // The stage may have moved meanwhile: look again.
                        continue;
                    }
                },
            };
            drop(progress);
            drop(replaced);
            drop(fresh);
            return Poll::Pending;
        }
    }

    /// Takes out a registered waker, dropped once the lock is released.
    fn clear_waker(&self) {
        let waker = lock(&self.progress).waker.take();
        drop(waker);
    }

    /// The owner stops waiting. Returns true when the loans have already drained, so
    /// the owner must close now; otherwise the last loan will.
    pub(crate) fn abandon(&self) -> bool {
        let (drained, waker) = {
            let mut progress = lock(&self.progress);
            progress.closer = Closer::LastLoan;
            (progress.stage == Stage::Drained, progress.waker.take())
        };
        // Dropped unlocked: the waker may own the last loan (see module docs).
        drop(waker);
        drained
    }
}

pub(crate) fn is_closed(stage: Stage) -> bool {
    matches!(stage, Stage::Closed(_))
}

pub(crate) fn is_drained(stage: Stage) -> bool {
    stage != Stage::Lent
}

pub(crate) fn to_io(result: Result<(), Errno>) -> io::Result<()> {
    result.map_err(|errno| io::Error::from_raw_os_error(errno as i32))
}

pub(crate) fn outcome(stage: Stage) -> io::Result<()> {
    match stage {
        Stage::Closed(result) => to_io(result),
        other => unreachable!("close outcome read at stage {other:?}"),
    }
}

/// A deferred close in progress, returned by [`Lender::close`](crate::Lender::close):
/// the fd closes when its last loan returns, on that loan's thread. Keep this to learn
/// the `close(2)` result; dropping it does not stop or leak the close.
///
/// It is also a `Future` of that result, woken by the last returning loan.
#[must_use = "the close(2) result is only reported through this handle"]
pub struct Closing {
    inner: ClosingInner,
}

enum ClosingInner {
    Done(Result<(), Errno>),
    Pending(Arc<CloseSignal>),
}

impl Closing {
    pub(crate) fn done(result: Result<(), Errno>) -> Closing {
        Closing {
            inner: ClosingInner::Done(result),
        }
    }

    pub(crate) fn pending(signal: Arc<CloseSignal>) -> Closing {
        Closing {
            inner: ClosingInner::Pending(signal),
        }
    }

    /// The `close(2)` result, if the fd has closed yet.
    pub fn result(&self) -> Option<io::Result<()>> {
        match &self.inner {
            ClosingInner::Done(result) => Some(to_io(*result)),
            ClosingInner::Pending(signal) => {
                let stage = lock(&signal.progress).stage;
                is_closed(stage).then(|| outcome(stage))
            }
        }
    }

    /// True once the fd has closed.
    pub fn is_closed(&self) -> bool {
        self.result().is_some()
    }

    /// Blocks until the last loan has returned and closed the fd; its result.
    ///
    /// On the owner's thread while its local loans are alive this would never end:
    /// it returns `LendError::LocalLoansOutstanding` (as an `io::Error`, see
    /// [`LendError::from_io`]) at once instead, and the last local loan closes. A
    /// thread that waits while it holds a [`Loan`](crate::Loan) of the file itself
    /// cannot finish either; fdlend cannot see that one.
    pub fn wait(self) -> io::Result<()> {
        // By reference: dropping `self` afterwards clears a waker left by a poll.
        match &self.inner {
            ClosingInner::Done(result) => to_io(*result),
            ClosingInner::Pending(signal) => outcome(signal.wait_until(is_closed)?),
        }
    }
}

impl Drop for Closing {
    fn drop(&mut self) {
        // A waker left by a poll would stay in the record's signal until the close,
        // and if it owns the last loan, the close would never come.
        if let ClosingInner::Pending(signal) = &self.inner {
            signal.clear_waker();
        }
    }
}

impl Future for Closing {
    type Output = io::Result<()>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.inner {
            ClosingInner::Done(result) => Poll::Ready(to_io(*result)),
            ClosingInner::Pending(signal) => signal
                .poll_until(cx, is_closed)
                .map(|stage| outcome(stage?)),
        }
    }
}

impl std::fmt::Debug for Closing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Closing")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Closes an fd that is ours, reporting what `close(2)` said (which `OwnedFd`'s drop
/// would swallow).
pub(crate) fn close_owned(fd: OwnedFd) -> io::Result<()> {
    // SAFETY: `into_raw_fd` gives up the `OwnedFd`, so this is its one close.
    to_io(unsafe { fd::close(fd.into_raw_fd()) })
}

/// Finishes the close of an incarnation whose count just drained: called exactly
/// once, by whoever drained it (see `Liveness::release`), with the signal the owner
/// left, if any.
pub(crate) fn finish_drained(signal: Option<Arc<CloseSignal>>, fd: RawFd) {
    match signal {
        Some(signal) => signal.drained(fd),
        // A plain drop of the owner left no one to tell: close here.
        // SAFETY: the drain killed the record's word, so this thread alone owns `fd`.
        None => drop(unsafe { fd::close(fd) }),
    }
}
