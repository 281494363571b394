//! Cancel-then-close for send ops. A send's splices name its private pipe and the
//! destination, never the lent file, so no cancel by fd matches them: each is
//! cancelled by id. A cancel by id can miss a send between its two linked splices
//! (the second is not queued yet), so the ring keeps chasing: while sends of a
//! cancelled file are in flight, a 5 ms timeout op of its own wakes it to cancel
//! them again.

use super::handle::Handle;
use super::requests::CancelRequest;
use super::ring::Ring;
use super::table::FileId;
use io_uring::{opcode, types};
use std::sync::Arc;
use std::time::Duration;

/// How often a ring retries cancelling sends it missed.
const RETRY: Duration = Duration::from_millis(5);

impl Ring {
    /// Pushes a cancel by id for both stages of every in-flight send of `file`
    /// (best effort: a full queue leaves them to the next retry), and keeps
    /// chasing them.
    pub(crate) fn cancel_sends(&mut self, file: FileId, request: Option<&Arc<CancelRequest>>) {
        if self.cancel_by_id(file, Some(true), request) && !self.mailbox.sends.files.contains(&file)
        {
            self.mailbox.sends.files.push(file);
        }
    }

    /// Pushes a cancel by id for every in-flight op on `file` (`sends` as in
    /// `OpTable::ops_of`), each credited to `request`. False if there was none.
    pub(crate) fn cancel_by_id(
        &mut self,
        file: FileId,
        sends: Option<bool>,
        request: Option<&Arc<CancelRequest>>,
    ) -> bool {
        let ops = self.ops.borrow().ops_of(file, sends);
        if ops.is_empty() {
            return false;
        }
        for data in ops {
            let by_id = types::CancelBuilder::user_data(data);
            let pushed = self.push((), None, |_| vec![opcode::AsyncCancel2::new(by_id).build()]);
            if let Ok(key) = pushed {
                let handle = Handle::new(&self.ops, key);
                self.mailbox.sends.cancels.push((request.cloned(), handle));
            }
        }
        true
    }

    /// Credits finished cancels, and while sends of cancelled files are still in
    /// flight, cancels them again on each tick of a timeout op.
    pub(crate) fn chase_sends(&mut self) {
        self.mailbox
            .sends
            .cancels
            .retain(|(request, op)| match op.take() {
                Some(((), results)) => {
                    // EALREADY: it ran in an io-wq worker, which was interrupted.
                    let ended = results[0] >= 0 || results[0] == -libc::EALREADY;
                    if let Some(request) = request {
                        request.add_cancelled(usize::from(ended));
                    }
                    false
                }
                None => true,
            });
        let files = std::mem::take(&mut self.mailbox.sends.files);
        let left: Vec<FileId> = files
            .into_iter()
            .filter(|&file| !self.ops.borrow().ops_of(file, Some(true)).is_empty())
            .collect();
        let ticked = match &self.mailbox.sends.timer {
            Some(timer) => timer.is_done(),
            None => true,
        };
        if !ticked {
            self.mailbox.sends.files = left;
            return;
        }
        drop(self.mailbox.sends.timer.take());
        if left.is_empty() {
            return;
        }
        for &file in &left {
            self.cancel_sends(file, None);
        }
        self.mailbox.sends.files = left;
        let tick = Box::new(types::Timespec::from(RETRY));
        let pushed = self.push(tick, None, |tick| {
            vec![opcode::Timeout::new(&**tick as *const types::Timespec).build()]
        });
        if let Ok(key) = pushed {
            self.mailbox.sends.timer = Some(Handle::new(&self.ops, key));
        }
        let _ = self.uring.submit();
    }
}
