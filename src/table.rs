//! The slot table: one [`Slot`] per fd number, found by indexing, never by hashing.
//!
//! Two levels, like the kernel's own fd table: a fixed array of page pointers, and
//! pages of slots allocated on first use and never freed while the table lives. A
//! slot points at the record of the file currently lent under its number and hands
//! out that number's incarnations. Only registration and `Ticket::pin` come here:
//! loans point at their record directly.

use crate::error::LendError;
use crate::liveness::{Refusal, State, MAX_LOANS};
use crate::record::{pool, Record};
use crate::sync::{lock, AtomicPtr, AtomicU64, Mutex, Ordering};
use std::os::fd::RawFd;
use std::ptr;

#[cfg(not(loom))]
const PAGE_BITS: u32 = 10;
#[cfg(not(loom))]
const PAGES: usize = 1024;
// Loom tracks every atomic it sees; small pages keep a model's state space small.
#[cfg(loom)]
const PAGE_BITS: u32 = 4;
#[cfg(loom)]
const PAGES: usize = 64;

const PAGE_SLOTS: usize = 1 << PAGE_BITS;

/// The largest fd number the table tracks: 2^20 - 1 by default, Linux's default
/// `nr_open` ceiling for `RLIMIT_NOFILE`.
pub(crate) const MAX_FD: RawFd = (PAGES * PAGE_SLOTS - 1) as RawFd;

/// Everything fdlend keeps for one fd number.
pub(crate) struct Slot {
    /// The record of the file lent under this number (dead between files); null
    /// before the first registration and after `close_now` detached its record.
    current: AtomicPtr<Record>,
    /// The incarnation last registered here, beside `current` so that a pin reads
    /// both at once: its check before the add (`Ticket::pin`) adds no load to the
    /// chain that leads to the add.
    incarnation: AtomicU64,
    /// Serialises registrations of this number; holds its next incarnation.
    next_incarnation: Mutex<u64>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            current: AtomicPtr::new(ptr::null_mut()),
            incarnation: AtomicU64::new(u64::MAX),
            next_incarnation: Mutex::new(0),
        }
    }

    /// The record last registered under this number, if any.
    #[inline]
    pub(crate) fn current(&self) -> Option<&'static Record> {
        // Acquire pairs with the Release in `register` that installed the record.
        let record = self.current.load(Ordering::Acquire);
        // SAFETY: non-null pointers here come from `pool().take()`, whose records live
        // as long as the pool (the process, or the loom execution with this table).
        (!record.is_null()).then(|| unsafe { &*record })
    }

    /// The incarnation last registered under this number (`u64::MAX`, never one,
    /// before the first).
    #[inline]
    pub(crate) fn incarnation(&self) -> u64 {
        // Relaxed: see `register`.
        self.incarnation.load(Ordering::Relaxed)
    }

    /// Opens `fd`'s next incarnation in this slot's record, counting the owner.
    fn register(&self, fd: RawFd, max_loans: u32) -> Result<(&'static Record, u64), LendError> {
        let mut next = lock(&self.next_incarnation);
        let incarnation = *next;
        if incarnation == u64::MAX {
            return Err(LendError::Exhausted { fd });
        }
        let record = match self.current() {
            Some(record) if record.liveness.load().state() != State::Dead => {
                return Err(LendError::SlotLive { fd })
            }
            Some(record) => {
                record.set_file(fd, incarnation, max_loans);
                record
            }
            None => {
                let record = pool().take();
                // Written before the record is published: a stale pin that finds it
                // reads (and refuses with) these fields, never a blank limit.
                record.set_file(fd, incarnation, max_loans);
                // Release pairs with `current`'s Acquire: whoever finds the record
                // sees the fields just written (`open` below publishes them to
                // whoever finds the word live).
                self.current
                    .store(ptr::from_ref(record).cast_mut(), Ordering::Release);
                record
            }
        };
        // Relaxed: a hint for stale pins, which check the record itself after their
        // add; a pin of this file's ticket is ordered after this registration anyway.
        self.incarnation.store(incarnation, Ordering::Relaxed);
        match record.liveness.open(max_loans < MAX_LOANS) {
            Ok(()) => {}
            Err(Refusal::Live) => unreachable!("a dead record opened under the slot's lock"),
            Err(other) => unreachable!("open refused with {other:?}"),
        }
        *next = incarnation + 1;
        Ok((record, incarnation))
    }

    /// Detaches a revoked record: the number's next file gets a fresh one, while the
    /// revoked loans count down on this one.
    pub(crate) fn detach(&self, record: &'static Record) {
        let _registering = lock(&self.next_incarnation);
        // Release: a pin that still finds the record sees it revoked (its word was
        // revoked before this), one that finds null reports the file closed.
        let _ = self.current.compare_exchange(
            ptr::from_ref(record).cast_mut(),
            ptr::null_mut(),
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// Moves the next incarnation of this number forward to `to` (never back).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn advance_incarnations(&self, to: u64) {
        let mut next = lock(&self.next_incarnation);
        *next = (*next).max(to);
    }
}

/// The table. One global instance serves the process; loom builds get a fresh one
/// per model execution.
pub(crate) struct Table {
    pages: [AtomicPtr<Slot>; PAGES],
}

impl Table {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Table {
        Table {
            pages: [const { AtomicPtr::new(ptr::null_mut()) }; PAGES],
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Table {
        Table {
            pages: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
        }
    }

    #[inline]
    fn split(fd: RawFd) -> Option<(usize, usize)> {
        let index = usize::try_from(fd)
            .ok()
            .filter(|&index| index < PAGES * PAGE_SLOTS)?;
        Some((index >> PAGE_BITS, index & (PAGE_SLOTS - 1)))
    }

    /// The slot of `fd`, if its page exists.
    #[inline]
    pub(crate) fn get(&self, fd: RawFd) -> Option<&Slot> {
        let (page, index) = Self::split(fd)?;
        // Acquire pairs with the Release publishing the page in `get_or_insert`.
        let base = self.pages[page].load(Ordering::Acquire);
        // SAFETY: a non-null page pointer came from a leaked `Box<[Slot]>` of
        // PAGE_SLOTS slots (`get_or_insert`), freed only in `Drop`, which needs `&mut`;
        // `index < PAGE_SLOTS` by `split`.
        (!base.is_null()).then(|| unsafe { &*base.add(index) })
    }

    /// The slot of `fd`, allocating its page on first use. `None` when the number is
    /// beyond [`MAX_FD`].
    pub(crate) fn get_or_insert(&self, fd: RawFd) -> Option<&Slot> {
        let (page, _) = Self::split(fd)?;
        if self.get(fd).is_none() {
            let fresh: Box<[Slot]> = (0..PAGE_SLOTS).map(|_| Slot::new()).collect();
            let fresh = Box::into_raw(fresh).cast::<Slot>();
            // AcqRel: Release publishes the initialised page to `get`; Acquire on
            // failure pairs with the winner's Release before we read its page.
            if self.pages[page]
                .compare_exchange(ptr::null_mut(), fresh, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // SAFETY: `fresh` came from `Box::into_raw` just above and was never
                // shared: the exchange that would have published it failed.
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(fresh, PAGE_SLOTS)) });
            }
        }
        self.get(fd)
    }
}

impl Table {
    /// Registers `fd` (owned by the caller) for lending: the record now counting it,
    /// with the owner's reference, and its incarnation.
    pub(crate) fn register(
        &self,
        fd: RawFd,
        max_loans: u32,
    ) -> Result<(&'static Record, u64), LendError> {
        let slot = self
            .get_or_insert(fd)
            .ok_or(LendError::OutOfRange { fd, max: MAX_FD })?;
        slot.register(fd, max_loans)
    }

    /// The record last registered under `fd`, if any.
    #[inline]
    pub(crate) fn current(&self, fd: RawFd) -> Option<&'static Record> {
        self.get(fd)?.current()
    }

    /// The record last registered under `fd` and that registration's incarnation.
    #[inline]
    pub(crate) fn current_with_incarnation(&self, fd: RawFd) -> Option<(&'static Record, u64)> {
        let slot = self.get(fd)?;
        Some((slot.current()?, slot.incarnation()))
    }

    /// Detaches `fd`'s revoked record (see `Slot::detach`).
    pub(crate) fn detach(&self, fd: RawFd, record: &'static Record) {
        if let Some(slot) = self.get(fd) {
            slot.detach(record);
        }
    }

    /// Moves `fd`'s next incarnation forward to `to` (never back), allocating its slot.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn advance_incarnations(&self, fd: RawFd, to: u64) -> Result<(), LendError> {
        let slot = self
            .get_or_insert(fd)
            .ok_or(LendError::OutOfRange { fd, max: MAX_FD })?;
        slot.advance_incarnations(to);
        Ok(())
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // A failing loom model drops its lazy statics (this table) while unwinding,
        // outside the execution, where any loom atomic access panics again and aborts
        // the test binary. Leak the pages then, so loom's own report (a causality
        // violation, a deadlock) reaches the test instead of an abort.
        #[cfg(loom)]
        if std::thread::panicking() {
            return;
        }
        for page in &self.pages {
            // Relaxed: `&mut self` means no other thread can reach the table.
            let base = page.load(Ordering::Relaxed);
            if !base.is_null() {
                // SAFETY: non-null pages are leaked `Box<[Slot]>`s of PAGE_SLOTS slots
                // (`get_or_insert`); `&mut self` rules out any reference into them.
                drop(unsafe { Box::from_raw(ptr::slice_from_raw_parts_mut(base, PAGE_SLOTS)) });
            }
        }
    }
}

#[cfg(not(loom))]
static GLOBAL: Table = Table::new();

/// The process-wide table.
#[cfg(not(loom))]
pub(crate) fn global() -> &'static Table {
    &GLOBAL
}

#[cfg(loom)]
loom::lazy_static! {
    static ref GLOBAL: Table = Table::new();
}

/// The table of the current loom execution (fresh for each one).
#[cfg(loom)]
pub(crate) fn global() -> &'static Table {
    &GLOBAL
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn slots_are_found_again_at_the_same_address() {
        let table = Table::new();
        assert!(table.get(5).is_none(), "no page yet");
        let first = table.get_or_insert(5).unwrap() as *const Slot;
        assert_eq!(table.get(5).unwrap() as *const Slot, first);
        assert_ne!(table.get_or_insert(6).unwrap() as *const Slot, first);
    }

    #[test]
    fn numbers_outside_the_table_have_no_slot() {
        let table = Table::new();
        assert!(table.get_or_insert(-1).is_none());
        assert!(table.get_or_insert(MAX_FD + 1).is_none());
        assert!(table.get_or_insert(MAX_FD).is_some());
    }
}
