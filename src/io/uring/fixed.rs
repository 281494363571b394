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

use super::error::RegisterRefused;
use super::ring::Ring;
use super::slots::{direct_alignment, Entry, FixedFile};
use crate::Loan;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;

/// Slots in a ring's fixed-file table when the first file is registered without
/// [`Ring::reserve_fixed_files`].
pub const DEFAULT_FIXED_FILES: u32 = 64;

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
