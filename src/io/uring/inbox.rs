//! The ring side of cancel-then-close (the shared state is in requests.rs): a
//! ring keeps its inbox's nudge read armed, and at each [`Ring::reap`] serves the
//! requests its inbox holds, answering each when its cancel's CQE is reaped.

use super::handle::Handle;
use super::requests::{CancelRequest, SendChase, RINGS_HERE};
use super::ring::Ring;
use io_uring::{opcode, types};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

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

    /// `reap` without serving the inbox (for drop).
    fn reap_quietly(&mut self) {
        self.record_completions(drop);
        self.settle_files();
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
