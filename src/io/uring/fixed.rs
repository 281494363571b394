//! Registered-file lending: a [`Ring`] takes a [`Loan`] into its sparse fixed-file
//! table and keeps it until the slot is unregistered *and* every op that used the
//! slot has completed, so the owner's `close_wait`/`close_async` waits for the
//! kernel's last reference naturally, through the loan.
//!
//! Life of a slot: `register` (sync `IORING_REGISTER_FILES_UPDATE` with the loan's
//! fd; the kernel takes its own file reference) → ops with `types::Fixed` (each
//! counted until its last CQE) → `release` or the [`FixedFile`] dropped → once the
//! counted ops are reaped, a sync update to `-1` (when it returns, no op can
//! resolve the slot) → the loan is dropped and the slot can be reused. A
//! cancel-then-close revokes the slot instead: it is unregistered at once (its ops
//! are being cancelled) and the loan drops when they are reaped.

use super::error::{FixedOpError, RegisterRefused};
use super::handoff::Handoff;
use super::ring::Ring;
use super::table::FileId;
use crate::io::direct::{is_direct, DirectAlignment};
use crate::Loan;
use std::cell::RefCell;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::rc::Rc;
use std::sync::Arc;

/// Slots in a ring's fixed-file table when the first file is registered without
/// [`Ring::reserve_fixed_files`].
pub const DEFAULT_FIXED_FILES: u32 = 64;

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

/// A loan registered in a [`Ring`]'s fixed-file table: ops name it by slot, so
/// the kernel skips the per-op file lookup. `!Send`: it belongs to its ring.
/// Give it back with [`Ring::release`]; dropping it releases it at the ring's next
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
    fn capacity(&self) -> u32 {
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
    fn due_for_unregister(&mut self) -> Vec<u32> {
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

    fn unregistered(&mut self, slot: u32) {
        if let Entry::Live { registered, .. } = &mut self.entries[slot as usize] {
            *registered = false;
        }
    }

    /// Loans whose slot is unregistered with no op left (to drop outside the
    /// borrow); frees slots whose handle is gone too.
    fn collect_loans(&mut self) -> Vec<Loan> {
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

impl Ring {
    /// Sizes this ring's fixed-file table (a sparse table of `slots` entries).
    /// Only before the first [`register`](Ring::register), which otherwise
    /// reserves [`DEFAULT_FIXED_FILES`].
    pub fn reserve_fixed_files(&mut self, slots: u32) -> io::Result<()> {
        if self.files.borrow().capacity() > 0 {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "this ring's fixed-file table is already registered",
            ));
        }
        self.uring.submitter().register_files_sparse(slots)?;
        let mut files = self.files.borrow_mut();
        files.entries = (0..slots).map(|_| Entry::Vacant).collect();
        files.free = (0..slots).rev().collect();
        Ok(())
    }

    /// Registers `loan`'s file in a free slot of this ring's fixed-file table. The
    /// ring holds the loan until the slot is unregistered and every op that used it
    /// is reaped.
    pub fn register(&mut self, loan: Loan) -> Result<FixedFile, RegisterRefused> {
        self.settle_files();
        if self.files.borrow().capacity() == 0 {
            if let Err(error) = self.reserve_fixed_files(DEFAULT_FIXED_FILES) {
                return Err(RegisterRefused::Kernel { error, loan });
            }
        }
        let Some(slot) = self.files.borrow_mut().free.pop() else {
            return Err(RegisterRefused::TableFull { loan });
        };
        let fd = loan.as_raw_fd();
        let direct = direct_alignment(&loan);
        // The loan keeps `fd` open during the call; the kernel takes its own
        // reference to the file, dropped when the slot is updated away and the ops
        // that resolved it are done.
        if let Err(error) = self.uring.submitter().register_files_update(slot, &[fd]) {
            self.files.borrow_mut().free.push(slot);
            return Err(RegisterRefused::Kernel { error, loan });
        }
        self.files.borrow_mut().entries[slot as usize] = Entry::Live {
            loan: Some(loan),
            ops: 0,
            handle: true,
            registered: true,
            revoked: false,
            direct,
        };
        Ok(FixedFile {
            files: Rc::clone(&self.files),
            slot,
        })
    }

    /// Gives a registered file back: once the ops still using the slot are reaped
    /// (at once if none) the slot is unregistered, and the loan returns.
    pub fn release(&mut self, file: FixedFile) {
        drop(file);
        self.settle_files();
    }

    /// Loans held in this ring's fixed-file table (registered, or waiting for ops).
    pub fn fixed_loans(&self) -> usize {
        self.files
            .borrow()
            .entries
            .iter()
            .filter(|entry| matches!(entry, Entry::Live { loan: Some(_), .. }))
            .count()
    }

    /// Unregisters released or revoked slots and drops the loans that nothing in
    /// the kernel can reach any more.
    pub(crate) fn settle_files(&mut self) {
        let slots = self.files.borrow_mut().due_for_unregister();
        for slot in slots {
            // Sync update: when it returns, no new op resolves the slot; ops that
            // already did hold the kernel's reference until their CQE.
            if self
                .uring
                .submitter()
                .register_files_update(slot, &[-1])
                .is_ok()
            {
                self.files.borrow_mut().unregistered(slot);
            }
        }
        let loans = self.files.borrow_mut().collect_loans();
        // Outside the borrow: the last loan of a closing file closes it here.
        drop(loans);
    }
}
