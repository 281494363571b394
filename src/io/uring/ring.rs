//! [`Ring`]: an `IoUring` bound to its one op table. Owning the ring is what makes
//! op ids sound: every CQE the table records was reaped here, from the ring its ops
//! were pushed to, exactly once, so no completion can reach another table's op.

use super::handle::QueueFull;
use super::ids::{is_handoff, is_tagged};
use super::requests::Mailbox;
use super::slots::FixedTable;
use super::table::{Key, OpTable, Then};
use io_uring::{cqueue, squeue, IoUring};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::Arc;

/// An io_uring and the table of fdlend's ops on it. `!Send`: it lives on one thread.
///
/// The ring is owned, not borrowed, so a second table for the same ring cannot be
/// made (`with_ring` takes the `IoUring` by value):
///
/// ```compile_fail,E0382
/// let uring = io_uring::IoUring::new(8).unwrap();
/// let first = fdlend::io::uring::Ring::with_ring(uring).unwrap();
/// let second = fdlend::io::uring::Ring::with_ring(uring).unwrap(); // moved: refused
/// ```
///
/// Ops ([`read`](Ring::read), [`send`](Ring::send), their fixed-file forms) park
/// what the kernel touches in the table until their last CQE is reaped by
/// [`reap`](Ring::reap). A dropped op handle leaves them parked until then. If the
/// ring is dropped with ops in flight their resources are leaked on purpose (their
/// loans never return, so their files never close) rather than freed under the
/// kernel; reap until [`in_flight`](Ring::in_flight) is 0 before dropping it.
pub struct Ring {
    pub(crate) uring: IoUring,
    pub(crate) ops: Rc<RefCell<OpTable>>,
    pub(crate) files: Rc<RefCell<FixedTable>>,
    pub(crate) mailbox: Mailbox,
    /// A dup of the ring's fd that mailslots hold, made at the first one.
    pub(crate) own_fd: Option<Arc<OwnedFd>>,
    /// CQEs taken off the queue, so user callbacks run with no queue borrowed.
    /// Each is popped just before it is handled: if user code run for one panics,
    /// the rest stay here for the next `reap`.
    reaped: VecDeque<cqueue::Entry>,
    /// Second stages built at a reap that found the submission queue full; pushed
    /// before the next submit.
    deferred: VecDeque<squeue::Entry>,
    hooks: Hooks,
}

/// Where the features above the ring react to it: the ring calls these at its
/// turning points and knows nothing else of what they do (setup.rs wires them).
#[derive(Clone, Copy)]
pub(crate) struct Hooks {
    /// A CQE with the hand-off tag arrived: true if it installed a file (else it
    /// is foreign).
    pub(crate) handoff_cqe: fn(&mut Ring, u64, i32) -> bool,
    /// After a reap recorded its CQEs: settle fixed slots, serve the inbox.
    pub(crate) after_reap: fn(&mut Ring),
    /// When the ring is dropped, before its tables are.
    pub(crate) at_drop: fn(&mut Ring),
}

/// [`Ring::push_foreign`] refused an entry: it carries fdlend's `user_data` tag, or
/// the queue is full. Nothing was pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForeignPushError {
    /// Its `user_data` has one of fdlend's tags (`0xfd1e`, `0xfd1f`) in the top
    /// 16 bits; pick another.
    TaggedUserData(u64),
    /// The submission queue is full; submit, then push again.
    QueueFull,
}

impl fmt::Display for ForeignPushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForeignPushError::TaggedUserData(data) => write!(
                f,
                "user_data {data:#x} carries one of fdlend's tags (0xfd1e, 0xfd1f) in its top 16 bits; use another value"
            ),
            ForeignPushError::QueueFull => {
                f.write_str("the io_uring submission queue is full; submit, then push again")
            }
        }
    }
}

impl std::error::Error for ForeignPushError {}

impl Ring {
    /// A ring around `uring` with empty tables and a fresh inbox, whose features
    /// react through `hooks` (wired by `Ring::with_ring`, setup.rs).
    pub(crate) fn assemble(uring: IoUring, hooks: Hooks) -> io::Result<Ring> {
        Ok(Ring {
            uring,
            ops: Rc::new(RefCell::new(OpTable::new()?)),
            files: Rc::new(RefCell::new(FixedTable::default())),
            mailbox: Mailbox::new()?,
            own_fd: None,
            reaped: VecDeque::new(),
            deferred: VecDeque::new(),
            hooks,
        })
    }

    /// Ops whose last CQE has not been reaped yet, including dropped ones (not
    /// counting the ring's own inbox read and cancels).
    pub fn in_flight(&self) -> usize {
        let all = self.ops.borrow().in_flight();
        all - self.mailbox.internal_in_flight()
    }

    /// Submits what was pushed; see [`io_uring::Submitter::submit`].
    pub fn submit(&mut self) -> io::Result<usize> {
        self.push_deferred();
        self.uring.submit()
    }

    /// Submits what was pushed and waits until at least `want` CQEs are in the
    /// completion queue (not yet reaped); see [`io_uring::Submitter::submit_and_wait`].
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<usize> {
        self.push_deferred();
        self.uring.submit_and_wait(want)
    }

    /// Takes every CQE in the completion queue: fdlend's complete their ops (an
    /// abandoned op's resources are dropped here, possibly returning a closing
    /// file's last loan), the others go to `foreign`. Then released fixed files
    /// whose ops are all reaped give their loans back. Returns how many were ours.
    ///
    /// If user code run here panics (a dropped op's destination `Drop`, `foreign`),
    /// the CQE that ran it is handled and the others stay queued: catch the panic
    /// and the next `reap` completes them.
    pub fn reap(&mut self, foreign: impl FnMut(cqueue::Entry)) -> usize {
        let ours = self.record_completions(foreign);
        (self.hooks.after_reap)(self);
        ours
    }

    /// Records every CQE in the completion queue (the first half of `reap`).
    pub(crate) fn record_completions(&mut self, mut foreign: impl FnMut(cqueue::Entry)) -> usize {
        self.reaped.extend(self.uring.completion());
        let mut ours = 0;
        // One CQE at a time, each recorded before any user code runs for it (a
        // dropped op's destination, `foreign`): a panic there unwinds out of this
        // loop with the table whole and the unhandled CQEs still queued.
        while let Some(cqe) = self.reaped.pop_front() {
            let data = cqe.user_data();
            if is_handoff(data) && (self.hooks.handoff_cqe)(self, data, cqe.result()) {
                continue;
            }
            let recorded = match is_tagged(data) {
                true => self.ops.borrow_mut().record(data, cqe.result()),
                false => None,
            };
            // Not one of ours, or a forged tag that names no pending op.
            let Some(recorded) = recorded else {
                foreign(cqe);
                continue;
            };
            ours += 1;
            if let Some(slot) = recorded.fixed_done {
                self.files.borrow_mut().op_done(slot);
            }
            if let Some(next) = recorded.next {
                self.push_next(next);
            }
            // Outside the borrow: dropping a loan may close the file, and dropping
            // a user's destination runs their code, which may touch this table.
            drop(recorded.released);
            drop(recorded.freed);
        }
        ours
    }

    /// Pushes an SQE that is not fdlend's (its CQE will go to `reap`'s `foreign`).
    /// Refused, with nothing pushed, if its `user_data` carries one of fdlend's tags.
    ///
    /// Cancelling fdlend's ops this way is fine: a cancelled op still completes
    /// (with `-ECANCELED`) and its CQE is reaped like any other.
    ///
    /// # Safety
    /// - Every buffer, fd and other resource `entry` names stays valid until its CQE
    ///   is reaped, as for [`io_uring::SubmissionQueue::push`].
    /// - It does not close, or install over, an fd or fixed-file slot it does not
    ///   own (`IORING_OP_CLOSE`, `IORING_OP_FILES_UPDATE`, a direct-descriptor
    ///   open or accept into a slot): fdlend's ops and slots name those and count
    ///   on them staying the files their loans hold.
    /// - If it is an `IORING_OP_MSG_RING`, the CQE it posts on the target ring does
    ///   not carry fdlend's tags (`0xfd1e`, `0xfd1f` in the top 16 bits): only a
    ///   ring's own ops and hand-offs may use them (a tagged CQE that names none of
    ///   them goes to `foreign`, but one must not try to pass for them).
    pub unsafe fn push_foreign(&mut self, entry: &squeue::Entry) -> Result<(), ForeignPushError> {
        let data = entry.get_user_data();
        if is_tagged(data) || is_handoff(data) {
            return Err(ForeignPushError::TaggedUserData(data));
        }
        // SAFETY: the caller keeps what `entry` names valid until its CQE (above);
        // its user_data is not tagged, so its CQE never reaches the op table.
        unsafe { self.uring.submission().push(entry) }.map_err(|_| ForeignPushError::QueueFull)
    }

    /// Parks `resources` in the table and pushes the entries `build` makes from
    /// them (pointing into the parked box), all or nothing. `build` runs before the
    /// table is borrowed, so user code it calls (`as_fd`) may touch this table.
    pub(crate) fn push<R: 'static>(
        &mut self,
        resources: R,
        fixed: Option<u32>,
        build: impl FnOnce(&mut R) -> Vec<squeue::Entry>,
    ) -> Result<Key, QueueFull<R>> {
        self.push_with(resources, fixed, None, build)
    }

    /// `push` for an op of two stages whose second `then` builds from the first
    /// one's result: `build` makes stage 0 only; stage 1 is pushed as stage 0's CQE
    /// is reaped (or its result recorded without a push, see `table::Then`).
    pub(crate) fn push_then<R: 'static>(
        &mut self,
        resources: R,
        fixed: Option<u32>,
        then: Then,
        build: impl FnOnce(&mut R) -> squeue::Entry,
    ) -> Result<Key, QueueFull<R>> {
        self.push_with(resources, fixed, Some(then), |r| vec![build(r)])
    }

    fn push_with<R: 'static>(
        &mut self,
        resources: R,
        fixed: Option<u32>,
        then: Option<Then>,
        build: impl FnOnce(&mut R) -> Vec<squeue::Entry>,
    ) -> Result<Key, QueueFull<R>> {
        let mut boxed = Box::new(resources);
        // The entries point into the box, whose heap address survives the moves below.
        let built = build(&mut boxed);
        let mut sq = self.uring.submission();
        if sq.capacity() - sq.len() < built.len() {
            return Err(QueueFull(*boxed));
        }
        let mut ops = self.ops.borrow_mut();
        let stages = built.len() + usize::from(then.is_some());
        let key = ops.insert(boxed, stages as u8, fixed);
        if let Some(then) = then {
            ops.then(key, then);
        }
        for (stage, entry) in built.into_iter().enumerate() {
            let entry = entry.user_data(ops.user_data(key, stage as u64));
            // SAFETY: every buffer and fd the entry names is owned by the resources
            // now parked in the table under `key`; the table frees them only after
            // this op's last CQE is reaped from this ring (or leaks them if it dies
            // first). See SAFETY.md, "The io_uring contract".
            let pushed = unsafe { sq.push(&entry) };
            // Room for every entry was checked above under the same `&mut` borrow
            // of the queue, which the kernel only ever empties.
            assert!(pushed.is_ok(), "fdlend: the submission queue shrank");
        }
        Ok(key)
    }

    /// Pushes a stage an op's `Then` built, or keeps it for the next submit if
    /// the queue is full.
    fn push_next(&mut self, entry: squeue::Entry) {
        self.deferred.push_back(entry);
        self.push_deferred();
    }

    /// Pushes the stages kept back for want of room, in order, as far as they fit.
    fn push_deferred(&mut self) {
        let mut sq = self.uring.submission();
        while let Some(entry) = self.deferred.front() {
            // SAFETY: a stage built by an op's `Then` points into the resources
            // parked in the table under its `user_data`'s key, which stay there
            // until that stage's CQE is reaped (see `push_with`).
            if unsafe { sq.push(entry) }.is_err() {
                break;
            }
            self.deferred.pop_front();
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        (self.hooks.at_drop)(self);
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("fd", &std::os::fd::AsRawFd::as_raw_fd(&self.uring))
            .field("in_flight", &self.in_flight())
            .finish()
    }
}
