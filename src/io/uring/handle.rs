//! The handle of one op in a ring's table, and what every op shares: how a CQE's
//! result reads, the `QueueFull` refusal. Below the ring: a handle needs only the
//! table, never the ring.

use super::table::{Key, OpTable};
use nix::errno::Errno;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;

/// A default pipe's capacity, in pages: the most one send op moves.
pub(crate) const PIPE_PAGES: u64 = 16;

/// The submission queue had no room: nothing was submitted, here is everything back.
#[derive(Debug)]
pub struct QueueFull<T>(pub T);

impl<T> fmt::Display for QueueFull<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the io_uring submission queue is full; submit what is queued, then push again")
    }
}

impl<T: fmt::Debug> std::error::Error for QueueFull<T> {}

pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the running system; no memory is passed.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Handle of one op in a [`Ring`]'s table. Dropping it early parks the op's
/// resources until its last CQE is reaped.
pub(crate) struct Handle<R> {
    table: Rc<RefCell<OpTable>>,
    pub(crate) key: Key,
    _resources: PhantomData<R>,
}

impl<R: 'static> Handle<R> {
    pub(crate) fn new(table: &Rc<RefCell<OpTable>>, key: Key) -> Handle<R> {
        Handle {
            table: Rc::clone(table),
            key,
            _resources: PhantomData,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.table.borrow_mut().is_done(self.key)
    }

    pub(crate) fn take(&self) -> Option<(R, [i32; 2])> {
        let (resources, results) = self.table.borrow_mut().take_done(self.key)?;
        Some((
            *resources.downcast::<R>().expect("the op's own resources"),
            results,
        ))
    }
}

impl<R> Drop for Handle<R> {
    fn drop(&mut self) {
        let freed = self.table.borrow_mut().abandon(self.key);
        // Outside the borrow: the resources may hold user code (a destination's Drop).
        drop(freed);
    }
}

/// `ERESTARTSYS` and its kin (512..=516): kernel-internal codes that reach a CQE
/// when a cancel interrupts an op blocked in an io-wq worker (seen on 6.18 for a
/// splice into a full socket).
const KERNEL_RESTART: std::ops::RangeInclusive<i32> = 512..=516;

/// A CQE's result as bytes or errno; an interrupted op reports `ECANCELED`.
pub(crate) fn result(raw: i32) -> Result<usize, Errno> {
    usize::try_from(raw).map_err(|_| match -raw {
        errno if KERNEL_RESTART.contains(&errno) => Errno::ECANCELED,
        errno => Errno::from_raw(errno),
    })
}
