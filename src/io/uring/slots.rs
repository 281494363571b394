//! The state of a ring's fixed-file table: which loan each slot holds, the ops
//! counted on it, slots reserved for a hand-off, and the [`FixedFile`] handle. Data
//! only, below the ring (which owns one); registering, settling and hand-offs are
//! the ring's, in fixed.rs and handoff.rs.

use super::error::FixedOpError;
use super::table::FileId;
use crate::io::direct::{is_direct, DirectAlignment};
use crate::Loan;
use std::cell::RefCell;
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

pub(crate) enum Entry {
    Vacant,
    /// Waiting for a file another ring sends with `MSG_RING` (see handoff.rs).
    Reserved {
        handoff: Arc<Handoff>,
        /// The user's `FixedFile` still exists.
        handle: bool,
    },
    Live {
        /// `None` once dropped (unregistered and no op left).
        loan: Option<Loan>,
        /// Ops pushed with this slot whose last CQE is not reaped yet.
        ops: usize,
        /// The user's `FixedFile` still exists.
        handle: bool,
        /// Still in the kernel's table.
        registered: bool,
        /// A cancel-then-close took it: no new ops.
        revoked: bool,
        /// The file's O_DIRECT alignment, if it is O_DIRECT (sends bounce).
        direct: Option<DirectAlignment>,
    },
}

/// The ring's view of its fixed-file table.
#[derive(Default)]
pub(crate) struct FixedTable {
    pub(crate) entries: Vec<Entry>,
    pub(crate) free: Vec<u32>,
    /// Slots whose state changed and may need an unregister or a free.
    pub(crate) dirty: Vec<u32>,
}

/// A loan registered in a [`Ring`](super::Ring)'s fixed-file table: ops name it by slot, so
/// the kernel skips the per-op file lookup. `!Send`: it belongs to its ring.
/// Give it back with [`Ring::release`](super::Ring::release); dropping it releases it at the ring's next
/// `reap`, `register` or `release`.
pub struct FixedFile {
    pub(crate) files: Rc<RefCell<FixedTable>>,
    pub(crate) slot: u32,
}

impl FixedFile {
    /// Its index in the ring's fixed-file table.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// True once a cancel-then-close took the file: ops on it are refused.
    pub fn is_revoked(&self) -> bool {
        matches!(
            self.files.borrow().entries[self.slot as usize],
            Entry::Live { revoked: true, .. }
        )
    }
}

impl Drop for FixedFile {
    fn drop(&mut self) {
        let mut files = self.files.borrow_mut();
        match &mut files.entries[self.slot as usize] {
            Entry::Live { handle, .. } | Entry::Reserved { handle, .. } => *handle = false,
            Entry::Vacant => {}
        }
        files.dirty.push(self.slot);
    }
}

impl fmt::Debug for FixedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedFile")
            .field("slot", &self.slot)
            .finish()
    }
}

impl FixedTable {
    pub(crate) fn capacity(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Counts one more op on `slot`, if `file` may still be used on this table.
    pub(crate) fn check(
        &self,
        me: &Rc<RefCell<FixedTable>>,
        file: &FixedFile,
    ) -> Result<(), FixedOpError> {
        if !Rc::ptr_eq(me, &file.files) {
            return Err(FixedOpError::OtherRing);
        }
        match &self.entries[file.slot as usize] {
            Entry::Live { revoked: false, .. } => Ok(()),
            Entry::Reserved { .. } => Err(FixedOpError::NotInstalled),
            _ => Err(FixedOpError::Revoked),
        }
    }

    /// A second loan of `file`'s file, for a hand-off.
    pub(crate) fn loan_clone(
        &self,
        me: &Rc<RefCell<FixedTable>>,
        file: &FixedFile,
    ) -> Result<Loan, FixedOpError> {
        self.check(me, file)?;
        match &self.entries[file.slot as usize] {
            Entry::Live {
                loan: Some(loan), ..
            } => loan.try_clone().map_err(|_| FixedOpError::Revoked),
            _ => Err(FixedOpError::Revoked),
        }
    }

    /// The file registered in `slot`, by identity.
    pub(crate) fn file_of(&self, slot: u32) -> Option<FileId> {
        match self.entries.get(slot as usize)? {
            Entry::Live {
                loan: Some(loan), ..
            } => Some(FileId::of(loan)),
            _ => None,
        }
    }

    /// The O_DIRECT alignment of the file registered in `slot`, if it has one.
    pub(crate) fn direct_of(&self, slot: u32) -> Option<DirectAlignment> {
        match self.entries.get(slot as usize)? {
            Entry::Live { direct, .. } => *direct,
            _ => None,
        }
    }

    pub(crate) fn op_pushed(&mut self, slot: u32) {
        if let Entry::Live { ops, .. } = &mut self.entries[slot as usize] {
            *ops += 1;
        }
    }

    /// An op on `slot` had its last CQE reaped.
    pub(crate) fn op_done(&mut self, slot: u32) {
        if let Entry::Live { ops, .. } = &mut self.entries[slot as usize] {
            *ops -= 1;
            if *ops == 0 {
                self.dirty.push(slot);
            }
        }
    }

    /// Marks every live slot holding `file` revoked; returns those still
    /// registered. By identity: a slot holding a later file on the same number is
    /// untouched.
    pub(crate) fn revoke(&mut self, file: FileId) -> Vec<u32> {
        let mut slots = Vec::new();
        for (slot, entry) in self.entries.iter_mut().enumerate() {
            if let Entry::Live {
                revoked,
                registered,
                loan: Some(loan),
                ..
            } = entry
            {
                if FileId::of(loan) == file && !*revoked {
                    *revoked = true;
                    if *registered {
                        slots.push(slot as u32);
                    }
                    self.dirty.push(slot as u32);
                }
            }
        }
        slots
    }

    /// At the ring's drop: a slot with ops still in flight may be used by the
    /// kernel until the ring's teardown ends them, so its loan is leaked (the file
    /// never closes) like the ops' own resources, rather than returned early.
    pub(crate) fn forget_busy_loans(&mut self) {
        for entry in &mut self.entries {
            if let Entry::Live { loan, ops, .. } = entry {
                if *ops > 0 {
                    std::mem::forget(loan.take());
                }
            }
        }
    }

    /// Slots registered for files the kernel should forget now.
    pub(crate) fn due_for_unregister(&mut self) -> Vec<u32> {
        self.dirty.sort_unstable();
        self.dirty.dedup();
        self.dirty
            .iter()
            .copied()
            .filter(|&slot| {
                matches!(
                    self.entries[slot as usize],
                    Entry::Live { registered: true, handle, revoked, ops, .. }
                        if revoked || (!handle && ops == 0)
                )
            })
            .collect()
    }

    pub(crate) fn unregistered(&mut self, slot: u32) {
        if let Entry::Live { registered, .. } = &mut self.entries[slot as usize] {
            *registered = false;
        }
    }

    /// Loans whose slot is unregistered with no op left (to drop outside the
    /// borrow); frees slots whose handle is gone too.
    pub(crate) fn collect_loans(&mut self) -> Vec<Loan> {
        let mut loans = Vec::new();
        let mut still_dirty = Vec::new();
        for slot in std::mem::take(&mut self.dirty) {
            let entry = &mut self.entries[slot as usize];
            if let Entry::Reserved { handoff, handle } = entry {
                if !*handle {
                    if handoff.abandoned() {
                        // Given up, and nothing can arrive any more.
                        *entry = Entry::Vacant;
                        self.free.push(slot);
                    } else {
                        // A send may still come, or fail on another ring: look again.
                        still_dirty.push(slot);
                    }
                }
                continue;
            }
            let Entry::Live {
                loan,
                ops,
                handle,
                registered,
                revoked,
                ..
            } = entry
            else {
                continue;
            };
            if *registered {
                // The unregister was due but failed: try again later.
                if *revoked || (!*handle && *ops == 0) {
                    still_dirty.push(slot);
                }
                continue;
            }
            if *ops > 0 {
                continue; // op_done marks it dirty again
            }
            loans.extend(loan.take());
            if !*handle {
                *entry = Entry::Vacant;
                self.free.push(slot);
            }
        }
        self.dirty = still_dirty;
        loans
    }
}

/// The O_DIRECT alignment of `loan`'s file, if it is O_DIRECT (asked once, when it
/// enters a slot; a failed question is taken as "not O_DIRECT").
pub(crate) fn direct_alignment(loan: &Loan) -> Option<DirectAlignment> {
    match is_direct(loan.as_fd()) {
        Ok(true) => DirectAlignment::of(loan.as_fd()).ok(),
        _ => None,
    }
}

/// What the two rings share about one reserved slot.
pub(crate) struct Handoff {
    pub(crate) target: Arc<OwnedFd>,
    pub(crate) slot: u32,
    /// The `user_data` of the install's CQE on the target: the hand-off tag over 48
    /// random bits, so no other CQE can pass for it.
    pub(crate) data: u64,
    pub(crate) state: Mutex<Sending>,
}

#[derive(Default)]
pub(crate) struct Sending {
    /// The loan on its way, set before the `MSG_RING` is pushed.
    pub(crate) loan: Option<Loan>,
    /// A `MSG_RING` was pushed and has not failed: a file may arrive.
    pub(crate) pushed: bool,
}

impl Handoff {
    /// True when no file can arrive any more: no mailslot or op holds this, and
    /// no send is under way.
    pub(crate) fn abandoned(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) == 1 && !self.lock().pushed
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Sending> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// No file will arrive: the loan on its way comes back (to drop outside the
    /// table's borrow), and the target may free its slot once the mailslot is gone.
    pub(crate) fn failed(&self) -> Option<Loan> {
        let mut sending = self.lock();
        sending.pushed = false;
        sending.loan.take()
    }
}
