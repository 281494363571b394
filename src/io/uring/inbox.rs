//! How a closing thread reaches every ring's thread. Rings are per thread and
//! `!Send`, so a closer cannot touch them. Each [`Ring`] has an inbox (a
//! mutex-guarded queue) listed in a process-wide registry, and an eventfd whose read
//! the ring keeps armed as one of its own ops. A closer puts its request in every
//! live inbox and writes each eventfd: a ring thread blocked in `submit_and_wait`
//! wakes on that read's CQE, and its next [`Ring::reap`] serves the inbox.

use super::cancel::CancelRequest;
use super::cancel_sends::SendChase;
use super::handle::Handle;
use super::ring::Ring;
use io_uring::{opcode, types};
use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, Weak};

/// A ring's inbox, reachable from any thread.
pub(crate) struct Inbox {
    queue: Mutex<Queue>,
    nudge: OwnedFd,
}

#[derive(Default)]
struct Queue {
    requests: Vec<Arc<CancelRequest>>,
    /// The ring is gone: no request may wait for it.
    closed: bool,
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
    nudge: Option<Handle<(Arc<Inbox>, Vec<u8>)>>,
    serving: Vec<(Arc<CancelRequest>, Handle<()>)>,
    /// Sends of cancelled files, cancelled by id until they are done.
    pub(crate) sends: SendChase,
    /// Requests taken from the inbox that found no room in the queue yet.
    backlog: Vec<Arc<CancelRequest>>,
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

impl Ring {
    /// Keeps a read armed on the inbox's eventfd, so a closer's write wakes a
    /// thread blocked in `submit_and_wait`.
    pub(crate) fn arm_nudge(&mut self) {
        if self.mailbox.nudge.as_ref().is_some_and(|op| !op.is_done()) {
            return;
        }
        drop(self.mailbox.nudge.take());
        let inbox = Arc::clone(&self.mailbox.inbox);
        let pushed = self.push((inbox, vec![0u8; 8]), None, |(inbox, buf)| {
            let fd = types::Fd(inbox.nudge.as_raw_fd());
            vec![opcode::Read::new(fd, buf.as_mut_ptr(), 8).build()]
        });
        // A full queue: armed again at the next reap.
        if let Ok(key) = pushed {
            self.mailbox.nudge = Some(Handle::new(&self.ops, key));
            let _ = self.uring.submit();
        }
    }

    /// Answers finished cancels, re-arms the nudge, and serves new requests.
    pub(crate) fn serve_mailbox(&mut self) {
        // Sends' cancels first: pushed before the fd's, they complete before it.
        self.chase_sends();
        self.mailbox
            .serving
            .retain(|(request, op)| match op.take() {
                Some(((), results)) => {
                    request.answer(usize::try_from(results[0]).unwrap_or(0));
                    false
                }
                None => true,
            });
        self.arm_nudge();
        let mut requests = std::mem::take(&mut self.mailbox.backlog);
        requests.extend(std::mem::take(
            &mut self
                .mailbox
                .inbox
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .requests,
        ));
        if requests.is_empty() {
            return;
        }
        for request in requests {
            self.serve_request(request);
        }
        self.settle_files();
    }

    /// Pushes and submits the cancel for one request and revokes the file's fixed
    /// slots; the answer goes out when the cancel's CQE is reaped. The file is
    /// named by identity throughout: while the request holds its loan (until the
    /// last ring answers) its number can name no other file, so one cancel by fd
    /// reaches exactly its ops; without one (the lender was at its loan limit)
    /// each of its ops here is cancelled by id.
    pub(crate) fn serve_request(&mut self, request: Arc<CancelRequest>) {
        if request.is_withdrawn() {
            request.answer(0);
            return;
        }
        let file = request.file;
        let by_fd = request.holds_loan();
        // Sends first, by id: their splices name their pipe, which no cancel by fd
        // matches.
        self.cancel_sends(file, Some(&request));
        if !by_fd {
            self.cancel_by_id(file, Some(false), Some(&request));
        }
        // The answer waits for this entry's CQE: the cancel by fd, or a NOP behind
        // the cancels by id.
        let cancel = |_: &mut ()| {
            if !by_fd {
                return vec![opcode::Nop::new().build()];
            }
            let all = types::CancelBuilder::fd(types::Fd(file.fd)).all();
            vec![opcode::AsyncCancel2::new(all).build()]
        };
        let key = match self.push((), None, cancel) {
            Ok(key) => key,
            Err(_) => {
                let _ = self.uring.submit();
                match self.push((), None, cancel) {
                    Ok(key) => key,
                    Err(_) => {
                        self.mailbox.backlog.push(request);
                        return;
                    }
                }
            }
        };
        self.mailbox
            .serving
            .push((request, Handle::new(&self.ops, key)));
        // Submitted before the slots go, while the request's loan (or the slots'
        // own) keeps the number naming this file.
        let _ = self.uring.submit();
        self.files.borrow_mut().revoke(file);
    }

    /// At drop: no request may wait for this ring; its nudge read is cancelled and
    /// reaped so the eventfd and buffer are freed rather than leaked.
    pub(crate) fn close_mailbox(&mut self) {
        let queued = {
            let mut queue = self
                .mailbox
                .inbox
                .queue
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            queue.closed = true;
            std::mem::take(&mut queue.requests)
        };
        for request in queued
            .into_iter()
            .chain(std::mem::take(&mut self.mailbox.backlog))
        {
            request.answer(0);
        }
        for (request, _) in std::mem::take(&mut self.mailbox.serving) {
            request.answer(0);
        }
        self.mailbox.sends = SendChase::default();
        RINGS_HERE.with(|n| n.set(n.get() - 1));
        let Some(nudge) = self.mailbox.nudge.take() else {
            return;
        };
        let fd = self.mailbox.inbox.nudge.as_raw_fd();
        let stop = types::CancelBuilder::fd(types::Fd(fd)).all();
        // Bounded: a cancelled eventfd read completes at once; if it cannot be
        // pushed the op's buffer and inbox are leaked, which is safe.
        if self
            .push((), None, |_| vec![opcode::AsyncCancel2::new(stop).build()])
            .is_err()
        {
            return;
        }
        for _ in 0..64 {
            if nudge.is_done() {
                break;
            }
            match self.uring.submit_and_wait(1) {
                Err(e) if e.kind() != io::ErrorKind::Interrupted => break,
                _ => self.reap_quietly(),
            }
        }
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
