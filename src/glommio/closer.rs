//! The close of a [`LentDmaFile`](super::LentDmaFile) that waits for its loans: a
//! task on the owner's executor that, once the last loan is back, drops the
//! `DmaFile` so glommio closes it behind every op it still has queued for that fd.
//!
//! fdlend never `close(2)`s a lent `DmaFile`'s fd while its executor lives: an op
//! of that file queued in glommio's submission queue (a write future polled once and
//! forgotten) would otherwise be submitted on the fd *number* after it names another
//! file. glommio's own close is queued behind such ops, so the `DmaFile` closes
//! itself, on its executor, after fdlend's loans drained.

use crate::{LendError, Reclaim};
use ::glommio::io::DmaFile;
use std::cell::RefCell;
use std::future::Future;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};

/// What a lent file's closer task and its owner share, on the owner's thread.
#[derive(Default)]
pub(super) struct Slot {
    state: RefCell<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// The owner's wait for its loans, while one is under way. Kept here (not in the
    /// future awaiting it) so the thread's exit finds it if that future's task was
    /// leaked with its executor.
    reclaim: Option<Reclaim>,
    /// The file, once its owner let go of it before the loans came back: the closer
    /// drops it when they have.
    parked: Option<DmaFile>,
    /// The closer task, to wake when there is something to do.
    closer: Option<Waker>,
    /// Nothing left to do: the closer finishes.
    done: bool,
}

impl Slot {
    /// A slot and its closer task, spawned on the current executor (glommio panics
    /// outside one).
    pub(super) fn spawn() -> Rc<Slot> {
        let slot = Rc::new(Slot::default());
        let _ = STRANDED.try_with(|stranded| stranded.watch(Rc::downgrade(&slot)));
        ::glommio::spawn_local(Closer(Rc::clone(&slot))).detach();
        slot
    }

    /// Starts waiting for the loans with `reclaim`.
    pub(super) fn begin(&self, reclaim: Reclaim) {
        self.state.borrow_mut().reclaim = Some(reclaim);
    }

    /// Takes the wait back (the owner gave up waiting).
    pub(super) fn take_reclaim(&self) -> Option<Reclaim> {
        self.state.borrow_mut().reclaim.take()
    }

    /// Polls the wait begun with [`begin`](Slot::begin).
    pub(super) fn poll_reclaim(&self, cx: &mut Context<'_>) -> Poll<Result<OwnedFd, LendError>> {
        let mut state = self.state.borrow_mut();
        let reclaim = state.reclaim.as_mut().expect("fdlend: a reclaim begun");
        let done = std::task::ready!(Pin::new(reclaim).poll(cx));
        state.reclaim = None;
        Poll::Ready(done)
    }

    /// Hands `dma` to the closer: closed through glommio once the wait begun with
    /// [`begin`](Slot::begin) resolves.
    pub(super) fn park(&self, dma: DmaFile) {
        let closer = {
            let mut state = self.state.borrow_mut();
            debug_assert!(state.reclaim.is_some(), "parked without a wait");
            state.parked = Some(dma);
            state.closer.take()
        };
        // Woken outside the borrow: glommio may run the task's schedule hook.
        if let Some(closer) = closer {
            closer.wake();
        }
    }

    /// The file is closed or handed back: the closer finishes.
    pub(super) fn finish(&self) {
        let closer = {
            let mut state = self.state.borrow_mut();
            state.done = true;
            state.closer.take()
        };
        if let Some(closer) = closer {
            closer.wake();
        }
    }
}

/// The closer task: idle until a file is parked, then waits for the loans and
/// drops the file (glommio queues its close behind the file's pending ops).
struct Closer(Rc<Slot>);

impl Future for Closer {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let slot = &self.0;
        let mut state = slot.state.borrow_mut();
        if state.done {
            return Poll::Ready(());
        }
        if state.parked.is_none() {
            state.closer = Some(cx.waker().clone());
            return Poll::Pending;
        }
        drop(state);
        let reclaimed = std::task::ready!(slot.poll_reclaim(cx));
        let dma = {
            let mut state = slot.state.borrow_mut();
            state.done = true;
            state.parked.take().expect("fdlend: parked above")
        };
        match reclaimed {
            Ok(fd) => {
                // Every loan is back: the DmaFile is the fd's one owner again, and
                // its drop queues glommio's close behind its own pending ops.
                let _ = fd.into_raw_fd();
                drop(dma);
            }
            // Local loans on this thread kept the wait from ending; fdlend handed the
            // close to the last of them, so glommio must never close it too.
            Err(_) => std::mem::forget(dma),
        }
        Poll::Ready(())
    }
}

thread_local! {
    static STRANDED: Stranded = const { Stranded { watched: RefCell::new(Vec::new()) } };
}

/// The slots of this thread's lent files whose closers may still be alive.
struct Stranded {
    watched: RefCell<Vec<Weak<Slot>>>,
}

impl Stranded {
    fn watch(&self, slot: Weak<Slot>) {
        let mut watched = self.watched.borrow_mut();
        // Finished closers leave dead entries; pruning at powers of two keeps the
        // list proportional to the live ones at amortized O(1).
        if watched.len() >= 16 && watched.len().is_power_of_two() {
            watched.retain(|entry| entry.strong_count() > 0);
        }
        watched.push(slot);
    }
}

impl Drop for Stranded {
    fn drop(&mut self) {
        for entry in self.watched.get_mut().drain(..) {
            let Some(slot) = entry.upgrade() else {
                continue;
            };
            let mut state = slot.state.borrow_mut();
            // Alive at thread exit: its closer (or the future awaiting the wait) was
            // leaked with an executor of this thread, so glommio can no longer touch
            // the fd. Dropping the Reclaim hands the close to the last loan (or
            // closes now). The parked file is dropped too: its reactor is gone (the
            // executor was dropped before the thread's locals), so glommio's drop
            // queues no close, it only frees memory. (An executor kept alive past this
            // point, leaked or in a later thread-local, can never run again either.)
            if let Some(reclaim) = state.reclaim.take() {
                let parked = state.parked.take();
                drop(state);
                drop(reclaim);
                drop(parked);
            }
        }
    }
}
