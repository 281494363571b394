//! Cross-ring hand-off without an fd: the owner's ring installs a registered file
//! into another thread's ring's fixed-file table with `IORING_OP_MSG_RING`
//! (`IORING_MSG_SEND_FD`, Linux 6.0+).
//!
//! 1. The target ring reserves a slot: [`Ring::open_mailslot`] returns a
//!    [`Mailslot`] (`Send`: give it to the owner's thread) and a [`FixedFile`] that
//!    refuses ops (`NotInstalled`) until the file arrives.
//! 2. The owner's ring sends a registered file there: [`Ring::hand_off`] clones
//!    the slot's loan into the mailslot, then pushes the `MSG_RING`.
//! 3. The kernel installs the file in the target's slot and posts a CQE tagged
//!    `0xfd1f` there; the target's `reap` moves the loan into the slot, which from
//!    then on is the target's like any registered file: counted as a loan until the
//!    target releases it.
//!
//! The mailslot holds a dup of the target's ring fd, so the `MSG_RING` can never
//! reach another ring that reused the number.

use super::error::FixedOpError;
use super::fixed::DEFAULT_FIXED_FILES;
use super::handle::{result, Handle};
use super::ids::{random_tagged, HANDOFF_TAG};
use super::ring::Ring;
use super::slots::{direct_alignment, Entry, FixedFile, Handoff, Sending};
use io_uring::{opcode, types};
use nix::errno::Errno;
use std::any::Any;
use std::fmt;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

/// The `MSG_RING`'s `OnDone` (table.rs): a refused send gives back its loan at once, even
/// when no one holds the [`HandOffOp`] any more.
fn sent(resources: &mut dyn Any, results: &[i32; 2]) -> Option<Box<dyn Any>> {
    if results[0] >= 0 {
        return None;
    }
    let handoff = resources
        .downcast_ref::<Arc<Handoff>>()
        .expect("a hand-off op parks its Handoff");
    Some(Box::new(handoff.failed()?))
}

/// Where another ring can send a registered file: `Send`, give it to the owner's
/// thread. Dropping it unused frees the target's reserved slot.
pub struct Mailslot {
    handoff: Arc<Handoff>,
}

impl fmt::Debug for Mailslot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailslot")
            .field("ring", &self.handoff.target.as_raw_fd())
            .field("slot", &self.handoff.slot)
            .finish()
    }
}

/// A hand-off in flight on the owner's ring. See [`Ring::hand_off`].
pub struct HandOffOp {
    handle: Handle<Arc<Handoff>>,
}

impl HandOffOp {
    /// True once the `MSG_RING`'s CQE has been reaped.
    pub fn is_done(&self) -> bool {
        self.handle.is_done()
    }

    /// `Ok(Ok(()))` once the file is installed in the target's slot; `Ok(Err)` with
    /// the errno and the mailslot (to retry) if the kernel refused; the op back
    /// while its CQE is not reaped.
    pub fn finish(self) -> Result<Result<(), (Errno, Mailslot)>, HandOffOp> {
        let Some((handoff, results)) = self.handle.take() else {
            return Err(self);
        };
        Ok(match result(results[0]) {
            Ok(_) => Ok(()),
            // The op's `sent` already gave the loan back.
            Err(errno) => Err((errno, Mailslot { handoff })),
        })
    }
}

impl fmt::Debug for HandOffOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandOffOp").finish_non_exhaustive()
    }
}

impl Ring {
    /// Reserves a slot of this ring's fixed-file table for a file another ring
    /// will send. The `FixedFile` refuses ops until the file's arrival is reaped.
    pub fn open_mailslot(&mut self) -> io::Result<(Mailslot, FixedFile)> {
        self.settle_files();
        if self.files.borrow().entries.is_empty() {
            self.reserve_fixed_files(DEFAULT_FIXED_FILES)?;
        }
        let target = match &self.own_fd {
            Some(fd) => Arc::clone(fd),
            None => {
                let dup = self.uring.as_raw_fd();
                // SAFETY: the ring's fd is open for as long as `self.uring` lives,
                // which covers this call.
                let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(dup) };
                let fd = Arc::new(borrowed.try_clone_to_owned()?);
                self.own_fd = Some(Arc::clone(&fd));
                fd
            }
        };
        let mut files = self.files.borrow_mut();
        let Some(slot) = files.free.pop() else {
            return Err(io::Error::other(
                "the ring's fixed-file table is full; release a FixedFile first",
            ));
        };
        let data = random_tagged(HANDOFF_TAG)?;
        let handoff = Arc::new(Handoff {
            target,
            slot,
            data,
            state: Mutex::new(Sending::default()),
        });
        files.entries[slot as usize] = Entry::Reserved {
            handoff: Arc::clone(&handoff),
            handle: true,
        };
        Ok((
            Mailslot { handoff },
            FixedFile {
                files: Rc::clone(&self.files),
                slot,
            },
        ))
    }

    /// Sends the registered `file` into `to`'s ring: a second loan of it travels
    /// with the message and is held by the target's slot until the target releases
    /// it. `file` stays registered here.
    pub fn hand_off(
        &mut self,
        file: &FixedFile,
        to: Mailslot,
    ) -> Result<HandOffOp, (FixedOpError, Mailslot)> {
        let loan = match self.files.borrow().loan_clone(&self.files, file) {
            Ok(loan) => loan,
            Err(reason) => return Err((reason, to)),
        };
        let handoff = to.handoff;
        {
            let mut sending = handoff.lock();
            sending.loan = Some(loan);
            sending.pushed = true;
        }
        let (src, dst) = (file.slot, handoff.slot);
        let pushed = self.push(Arc::clone(&handoff), Some(src), |handoff| {
            let dest = types::DestinationSlot::try_from_slot_target(dst).expect("a table index");
            let ring = types::Fd(handoff.target.as_raw_fd());
            let data = handoff.data;
            vec![opcode::MsgRingSendFd::new(ring, types::Fixed(src), dest, data).build()]
        });
        match pushed {
            Ok(key) => {
                self.ops.borrow_mut().on_done(key, sent);
                self.files.borrow_mut().op_pushed(src);
                Ok(HandOffOp {
                    handle: Handle::new(&self.ops, key),
                })
            }
            Err(_) => {
                drop(handoff.failed());
                Err((FixedOpError::QueueFull, Mailslot { handoff }))
            }
        }
    }

    /// The target side of a hand-off CQE: the file is in the slot; its loan moves
    /// from the mailslot into the table. False, touching nothing, for a CQE that
    /// names no hand-off on its way here (a forged tag: it goes to `foreign`).
    pub(crate) fn installed(&mut self, user_data: u64, result: i32) -> bool {
        let mut files = self.files.borrow_mut();
        let found = files.entries.iter().position(
            |entry| matches!(entry, Entry::Reserved { handoff, .. } if handoff.data == user_data),
        );
        let Some(slot) = found else {
            return false;
        };
        let Entry::Reserved { handoff, handle } = &files.entries[slot] else {
            unreachable!("found Reserved above")
        };
        let mut sending = handoff.lock();
        if result < 0 || !sending.pushed || sending.loan.is_none() {
            return false;
        }
        let loan = sending.loan.take().expect("checked above");
        drop(sending);
        let handle = *handle;
        let direct = direct_alignment(&loan);
        files.entries[slot] = Entry::Live {
            loan: Some(loan),
            ops: 0,
            handle,
            registered: true,
            revoked: false,
            direct,
        };
        files.dirty.push(slot as u32);
        true
    }
}
