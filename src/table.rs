//! The slot table: one [`Slot`] per fd number, found by indexing, never by hashing.
//!
//! Two levels, like the kernel's own fd table: a fixed array of page pointers, and
//! pages of slots allocated on first use and never freed while the table lives. A
//! handle can therefore be just `(fd, epoch)`: its slot is at a fixed address for the
//! life of the process, and the epoch in the slot's word tells whether it is still
//! the handle's file.

use crate::close::CloseSignal;
use crate::liveness::{Liveness, COUNT_MAX};
use crate::sync::{Arc, AtomicPtr, AtomicU32, Mutex, Ordering};
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
    pub(crate) liveness: Liveness,
    /// Largest count the current incarnation allows (the owner's reference included).
    limit: AtomicU32,
    /// Set by a closing owner before the word turns `Closing`; taken by the drainer.
    pub(crate) signal: Mutex<Option<Arc<CloseSignal>>>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            liveness: Liveness::new(),
            limit: AtomicU32::new(COUNT_MAX),
            signal: Mutex::new(None),
        }
    }

    pub(crate) fn limit(&self) -> u32 {
        // Relaxed: written by the registering thread before any handle of this
        // incarnation exists, and every handle reaches its thread through some
        // synchronisation (a send, a spawn); a stale incarnation's read is harmless
        // because its epoch check fails anyway.
        self.limit.load(Ordering::Relaxed)
    }

    pub(crate) fn set_limit(&self, limit: u32) {
        // Relaxed: see `limit`.
        self.limit.store(limit, Ordering::Relaxed);
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

    fn split(fd: RawFd) -> Option<(usize, usize)> {
        let index = usize::try_from(fd)
            .ok()
            .filter(|&index| index < PAGES * PAGE_SLOTS)?;
        Some((index >> PAGE_BITS, index & (PAGE_SLOTS - 1)))
    }

    /// The slot of `fd`, if its page exists.
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
