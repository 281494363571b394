//! The state cancel-then-close shares between a closing thread and every ring's
//! thread: a closer's [`CancelRequest`] (the file by identity, its loan, the
//! tally), each ring's [`Inbox`] in a process-wide registry, and the ring side's
//! [`Mailbox`] (its armed nudge read, the cancels it serves, the sends it chases).
//! Data only, below the ring (which owns a mailbox); serving and chasing are the
//! ring's, in inbox.rs and cancel_sends.rs.
//!
//! Rings are per thread and `!Send`, so a closer cannot touch them: it puts its
//! request in every live inbox (a mutex-guarded queue) and writes each inbox's
//! eventfd, whose read the ring keeps armed as one of its own ops. A ring thread
//! blocked in `submit_and_wait` wakes on that read's CQE, and its next `reap`
//! serves the inbox.

use super::handle::Handle;
use super::table::FileId;
use crate::{Lender, Loan};
use io_uring::types;
use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, Weak};

/// One closer's request, shared by every ring it was sent to.
pub(crate) struct CancelRequest {
    /// The file, by identity: never the next file to get its number.
    pub(crate) file: FileId,
    pub(crate) state: Mutex<Tally>,
    pub(crate) answered: Condvar,
    /// The asking thread's own ring, nudged at the last answer: it reaps while it
    /// waits, so it can answer other closers meanwhile.
    wake: Option<Arc<Inbox>>,
}

#[derive(Default)]
pub(crate) struct Tally {
    pub(crate) waiting_for: usize,
    pub(crate) rings: usize,
    pub(crate) cancelled: usize,
    /// A loan of the file, held until the last ring answers: while a ring may
    /// still cancel by the file's number, that number names no other file. `None`
    /// if the lender was at its loan limit (rings then cancel by id).
    pub(crate) loan: Option<Loan>,
    /// The closer gave up waiting: rings that pick the request up later skip it.
    pub(crate) withdrawn: bool,
}

impl CancelRequest {
    pub(crate) fn new(lender: &Lender, wake: Option<Arc<Inbox>>) -> Arc<CancelRequest> {
        let file = FileId {
            fd: lender.as_raw_fd(),
            epoch: lender.epoch(),
        };
        Arc::new(CancelRequest {
            file,
            state: Mutex::new(Tally {
                loan: lender.loan().ok(),
                ..Tally::default()
            }),
            answered: Condvar::new(),
            wake,
        })
    }

    pub(crate) fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True while the request's loan keeps the file's number naming it.
    pub(crate) fn holds_loan(&self) -> bool {
        self.tally().loan.is_some()
    }

    /// True once the closer stopped waiting for it.
    pub(crate) fn is_withdrawn(&self) -> bool {
        self.tally().withdrawn
    }

    /// Counts ops a cancel by id ended.
    pub(crate) fn add_cancelled(&self, n: usize) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .cancelled += n;
    }

    pub(crate) fn waiting_for(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting_for
    }

    /// A ring is done with this request, having cancelled `cancelled` ops.
    pub(crate) fn answer(&self, cancelled: usize) {
        let mut tally = self.tally();
        tally.rings += 1;
        tally.cancelled += cancelled;
        drop(tally);
        self.no_longer_waiting_for(1);
    }

    /// `rings` rings will not answer (any more); at the last, the loan goes and
    /// the closer wakes.
    pub(crate) fn no_longer_waiting_for(&self, rings: usize) {
        let mut tally = self.tally();
        tally.waiting_for -= rings;
        if tally.waiting_for > 0 || rings == 0 {
            return;
        }
        let loan = tally.loan.take();
        drop(tally);
        // Outside the lock: the last loan of a closing file closes it here.
        drop(loan);
        self.answered.notify_all();
        if let Some(inbox) = &self.wake {
            inbox.nudge();
        }
    }
}

/// A ring's inbox, reachable from any thread.
pub(crate) struct Inbox {
    pub(crate) queue: Mutex<Queue>,
    pub(crate) nudge: OwnedFd,
}

#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) requests: Vec<Arc<CancelRequest>>,
    /// The ring is gone: no request may wait for it.
    pub(crate) closed: bool,
}

impl Inbox {
    /// Wakes the ring's thread if it waits in `submit_and_wait`.
    pub(crate) fn nudge(&self) {
        // A failed write only delays the ring's answer to its next reap.
        let _ = nix::unistd::write(&self.nudge, &1u64.to_ne_bytes());
    }
}

/// Every live ring's inbox.
static INBOXES: Mutex<Vec<Weak<Inbox>>> = Mutex::new(Vec::new());

thread_local! {
    /// Rings alive on this thread: a closer here would wait for itself.
    pub(crate) static RINGS_HERE: Cell<usize> = const { Cell::new(0) };
}

/// The ring side: its inbox, the armed eventfd read, and cancels being served.
pub(crate) struct Mailbox {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) nudge: Option<Handle<(Arc<Inbox>, Vec<u8>)>>,
    pub(crate) serving: Vec<(Arc<CancelRequest>, Handle<()>)>,
    /// Sends of cancelled files, cancelled by id until they are done.
    pub(crate) sends: SendChase,
    /// Requests taken from the inbox that found no room in the queue yet.
    pub(crate) backlog: Vec<Arc<CancelRequest>>,
}

impl Mailbox {
    pub(crate) fn new() -> io::Result<Mailbox> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new fd
        // that nothing else owns, so the `OwnedFd` below is its only owner.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` was just created above and is owned by no one else.
        let nudge = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
        let inbox = Arc::new(Inbox {
            queue: Mutex::new(Queue::default()),
            nudge,
        });
        let mut inboxes = INBOXES.lock().unwrap_or_else(|e| e.into_inner());
        inboxes.retain(|weak| weak.strong_count() > 0);
        inboxes.push(Arc::downgrade(&inbox));
        drop(inboxes);
        RINGS_HERE.with(|n| n.set(n.get() + 1));
        Ok(Mailbox {
            inbox,
            nudge: None,
            serving: Vec::new(),
            sends: SendChase::default(),
            backlog: Vec::new(),
        })
    }

    /// The ring's own ops still waiting for a CQE (not counted as the user's).
    pub(crate) fn internal_in_flight(&self) -> usize {
        let nudge = self.nudge.as_ref().is_some_and(|op| !op.is_done());
        let serving = self.serving.iter().filter(|(_, op)| !op.is_done()).count();
        usize::from(nudge) + serving + self.sends.in_flight()
    }
}

/// A ring's sends being cancelled.
#[derive(Default)]
pub(crate) struct SendChase {
    /// Cancels by id in flight, and the request to credit.
    pub(crate) cancels: Vec<(Option<Arc<CancelRequest>>, Handle<()>)>,
    /// Files (by identity: never the next file on the number) whose sends are
    /// cancelled until none is left.
    pub(crate) files: Vec<FileId>,
    pub(crate) timer: Option<Handle<Box<types::Timespec>>>,
}

impl SendChase {
    pub(crate) fn in_flight(&self) -> usize {
        let timer = self.timer.as_ref().is_some_and(|op| !op.is_done());
        usize::from(timer) + self.cancels.iter().filter(|(_, op)| !op.is_done()).count()
    }
}

/// Puts `request` in every live inbox but `skip`, and nudges each.
pub(crate) fn ask_every_ring(request: &Arc<CancelRequest>, skip: Option<&Arc<Inbox>>) {
    let inboxes: Vec<Arc<Inbox>> = INBOXES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .filter(|inbox| skip.map_or(true, |skip| !Arc::ptr_eq(inbox, skip)))
        .collect();
    for inbox in inboxes {
        let mut queue = inbox.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.closed {
            continue;
        }
        request
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .waiting_for += 1;
        queue.requests.push(Arc::clone(request));
        drop(queue);
        inbox.nudge();
    }
}

/// Takes `request` out of every inbox where no ring has picked it up yet; returns
/// how many it left (the rings that will not answer it).
pub(crate) fn withdraw_everywhere(request: &Arc<CancelRequest>) -> usize {
    let inboxes: Vec<Arc<Inbox>> = INBOXES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect();
    let mut withdrawn = 0;
    for inbox in inboxes {
        let mut queue = inbox.queue.lock().unwrap_or_else(|e| e.into_inner());
        let before = queue.requests.len();
        queue
            .requests
            .retain(|queued| !Arc::ptr_eq(queued, request));
        withdrawn += before - queue.requests.len();
    }
    withdrawn
}
