//! The one place that chooses between std and loom primitives.
//!
//! Every module imports its atomics, locks, `Arc` and thread identity from here, so
//! a `--cfg loom` build swaps all of them at once and the loom models check the real
//! code.

#[cfg(loom)]
pub(crate) use loom::sync::{
    atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};
#[cfg(loom)]
pub(crate) use loom::thread::ThreadId;

#[cfg(not(loom))]
pub(crate) use std::sync::{
    atomic::{AtomicI32, AtomicPtr, AtomicU64, Ordering},
    Arc, Condvar, Mutex, MutexGuard,
};
#[cfg(not(loom))]
pub(crate) use std::thread::ThreadId;

/// Locks `mutex`, ignoring poison: the data behind our mutexes is always left
/// consistent (every critical section is a few assignments), so a panic elsewhere
/// must not turn into a second panic on the close path.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The calling thread's identity (a loom thread's under loom).
pub(crate) fn current_thread() -> ThreadId {
    #[cfg(loom)]
    return loom::thread::current().id();
    #[cfg(not(loom))]
    return std::thread::current().id();
}

/// A pause in a bounded wait for another thread's next step: a spin at first, then
/// a yield (always a yield under loom, so that the model lets the other thread run).
pub(crate) fn spin_loop(attempt: u32) {
    #[cfg(loom)]
    {
        let _ = attempt;
        loom::thread::yield_now();
    }
    #[cfg(not(loom))]
    if attempt < 16 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}
