//! The liveness word: one `AtomicU64` per lent fd that says whether the fd may still
//! be used, and by how many.
//!
//! ```text
//!  63                32 31  30 29                 0
//! +--------------------+------+--------------------+
//! |       epoch        |state |       count        |
//! +--------------------+------+--------------------+
//! ```
//!
//! * **epoch** names one incarnation of the slot. It advances every time the slot is
//!   freed, so a handle that remembers `(fd, epoch)` can tell "my file" from "another
//!   file that got the same fd number later" (fd-number ABA).
//! * **state** is `Free` (no file), `Open` (new loans allowed), `Closing` (no new
//!   loans; whoever drops the count to zero frees the slot and finishes the close), or
//!   `Orphaned` (closing, and the owner's own reference is gone too).
//! * **count** is the number of counted references, the owner's own included while
//!   the state is `Open` or `Closing`: an `Open` word always counts at least the
//!   owner, which is what lets the owner's thread hand out local loans with no atomic
//!   operation (they share that one count). Knowing whether the owner is counted is
//!   what lets the loan limit stay exact while a file drains.
//!
//! This module knows nothing about fds or syscalls; it is the state machine alone.
//! Every transition is one compare-and-swap, so a word is never observed half-changed.

use crate::sync::{AtomicU64, Ordering};

/// The largest count a word can hold; [`Liveness::acquire`] refuses past a caller's
/// limit, which is never above this.
pub(crate) const COUNT_MAX: u32 = (1 << 30) - 1;

const COUNT_BITS: u32 = 30;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const STATE_MASK: u64 = 0b11 << COUNT_BITS;

/// What a slot is doing.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum State {
    /// No file: the slot waits for its next registration.
    Free = 0,
    /// A file is registered and new loans may be taken.
    Open = 1,
    /// The owner has begun closing: no new loans, existing ones drain.
    Closing = 2,
    /// Closing, and the owner has released its own reference: only loans remain.
    Orphaned = 3,
}

/// One decoded value of the word.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Word(u64);

impl Word {
    const fn new(epoch: u32, state: State, count: u32) -> Word {
        Word(((epoch as u64) << 32) | ((state as u64) << COUNT_BITS) | count as u64)
    }

    pub(crate) const fn epoch(self) -> u32 {
        (self.0 >> 32) as u32
    }

    pub(crate) fn state(self) -> State {
        match (self.0 & STATE_MASK) >> COUNT_BITS {
            0 => State::Free,
            1 => State::Open,
            2 => State::Closing,
            _ => State::Orphaned,
        }
    }

    pub(crate) const fn count(self) -> u32 {
        (self.0 & COUNT_MASK) as u32
    }

    /// The first word of the next incarnation: the epoch moves on so every handle to
    /// this one reads as stale.
    const fn freed(self) -> Word {
        Word::new(self.epoch().wrapping_add(1), State::Free, 0)
    }

    const fn with_count(self, count: u32) -> Word {
        Word((self.0 & !COUNT_MASK) | count as u64)
    }

    fn with_state(self, state: State) -> Word {
        Word((self.0 & !STATE_MASK) | ((state as u64) << COUNT_BITS))
    }
}

/// Why a reference could not be taken.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Refusal {
    /// The epoch asked for is gone and the slot is free: that file was closed.
    Closed,
    /// The epoch asked for is gone and the slot holds a newer file.
    Stale,
    /// The file is closing: only clones of existing references are allowed.
    Closing,
    /// The count has reached the limit.
    Saturated,
    /// Registration found the slot in use.
    Live,
}

/// What a release did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Released {
    /// One reference fewer; others remain (or the owner has not begun closing).
    Kept,
    /// This was the last reference of a closing file: the slot is now free (its epoch
    /// advanced) and the caller must finish the close, exactly once.
    Drained,
    /// The epoch is gone (the file was revoked by `close_now`): nothing was counted.
    Stale,
}

/// Whose reference is released.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Holder {
    /// A loan or raw token.
    Loan,
    /// The owner (its `Lender` and local loans, which share one reference).
    Owner,
}

impl State {
    /// Whether the count includes the owner's own reference.
    fn counts_owner(self) -> bool {
        matches!(self, State::Open | State::Closing)
    }
}

/// Who may take a new reference.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Taking {
    /// A brand-new loan (from the owner, a ticket): only while `Open`.
    New,
    /// A clone of a reference the caller already holds: also while `Closing`, since
    /// the held reference keeps the file open anyway (as `Arc::clone` does).
    Clone,
}

/// The atomic word itself. All transitions are compare-and-swap loops on the
/// expected epoch, so a handle from an older incarnation can never touch a newer one.
pub(crate) struct Liveness {
    word: AtomicU64,
}

impl Liveness {
    /// A free slot at epoch 0.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Liveness {
        Liveness {
            word: AtomicU64::new(0),
        }
    }

    /// A free slot at epoch 0 (loom atomics have no `const fn new`).
    #[cfg(loom)]
    pub(crate) fn new() -> Liveness {
        Liveness {
            word: AtomicU64::new(0),
        }
    }

    /// A snapshot, for diagnostics and for reading the current epoch.
    pub(crate) fn load(&self) -> Word {
        // Acquire pairs with the Release of `register`/`begin_close`/`release`, so a
        // caller who then trusts "this epoch is live" also sees what preceded it.
        Word(self.word.load(Ordering::Acquire))
    }

    /// Free → Open, counting the owner's reference. Returns the epoch of the new
    /// incarnation.
    pub(crate) fn register(&self) -> Result<u32, Refusal> {
        let mut current = Word(self.word.load(Ordering::Relaxed));
        loop {
            if current.state() != State::Free {
                return Err(Refusal::Live);
            }
            let next = Word::new(current.epoch(), State::Open, 1);
            // Release pairs with the Acquire of every later `acquire`/`load`: whoever
            // sees this incarnation open also sees the fd and limit set up before it.
            match self.word.compare_exchange_weak(
                current.0,
                next.0,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(current.epoch()),
                Err(seen) => current = Word(seen),
            }
        }
    }

    /// Counts one more loan of incarnation `epoch`, if fewer than `max_loans` loans
    /// (the owner's reference aside) are out.
    pub(crate) fn acquire(
        &self,
        epoch: u32,
        taking: Taking,
        max_loans: u32,
    ) -> Result<(), Refusal> {
        let mut current = Word(self.word.load(Ordering::Relaxed));
        loop {
            if current.epoch() != epoch {
                return Err(match current.state() {
                    State::Free => Refusal::Closed,
                    _ => Refusal::Stale,
                });
            }
            let state = current.state();
            match (state, taking) {
                (State::Free, _) => return Err(Refusal::Closed),
                (State::Closing | State::Orphaned, Taking::New) => return Err(Refusal::Closing),
                (State::Open, _) | (State::Closing | State::Orphaned, Taking::Clone) => {}
            }
            let loans = current.count() - u32::from(state.counts_owner());
            if loans >= max_loans || current.count() >= COUNT_MAX {
                return Err(Refusal::Saturated);
            }
            let next = current.with_count(current.count() + 1);
            // Acquire pairs with `register`'s Release: the new reference may use the
            // fd, so it must see the registration that made it valid.
            match self.word.compare_exchange_weak(
                current.0,
                next.0,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => current = Word(seen),
            }
        }
    }

    /// Gives back `holder`'s reference to incarnation `epoch`.
    pub(crate) fn release(&self, epoch: u32, holder: Holder) -> Released {
        let mut current = Word(self.word.load(Ordering::Relaxed));
        loop {
            if current.epoch() != epoch || current.state() == State::Free {
                return Released::Stale;
            }
            let state = current.state();
            let draining = current.count() == 1;
            let loans = current.count() - u32::from(state.counts_owner());
            match holder {
                Holder::Loan => assert!(
                    loans > 0,
                    "fdlend: liveness word {current:?} released below the owner's reference"
                ),
                Holder::Owner => assert!(
                    state == State::Closing,
                    "fdlend: owner released its reference of {current:?} without closing"
                ),
            }
            let next = if draining {
                current.freed()
            } else if holder == Holder::Owner {
                current
                    .with_count(current.count() - 1)
                    .with_state(State::Orphaned)
            } else {
                current.with_count(current.count() - 1)
            };
            // Release pairs with the Acquire of whoever drains the count: every use
            // of the fd through this reference happens before the close. The drainer
            // itself also acquires (AcqRel), pairing with all earlier releases.
            let ordering = if draining {
                DRAIN_ORDERING
            } else {
                Ordering::Release
            };
            match self
                .word
                .compare_exchange_weak(current.0, next.0, ordering, Ordering::Relaxed)
            {
                Ok(_) if draining => return Released::Drained,
                Ok(_) => return Released::Kept,
                Err(seen) => current = Word(seen),
            }
        }
    }

    /// Open → Closing for incarnation `epoch`: new loans stop, existing ones drain.
    /// The owner's reference is still counted; the owner releases it afterwards.
    pub(crate) fn begin_close(&self, epoch: u32) {
        let mut current = Word(self.word.load(Ordering::Relaxed));
        loop {
            assert!(
                current.epoch() == epoch && current.state() == State::Open,
                "fdlend: begin_close on {current:?}, expected open epoch {epoch}"
            );
            let next = current.with_state(State::Closing);
            // Release pairs with the drainer's Acquire: the close signal the owner
            // stored before this is visible to whoever finishes the close.
            match self.word.compare_exchange_weak(
                current.0,
                next.0,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(seen) => current = Word(seen),
            }
        }
    }

    /// Open with only the owner's reference → Free, in one step. Fails (with the
    /// count seen) while anything else is lent.
    pub(crate) fn retire_if_unlent(&self, epoch: u32) -> Result<(), u32> {
        let expected = Word::new(epoch, State::Open, 1);
        // Acquire pairs with every loan's Release in `release`: their uses of the fd
        // happen before the owner takes it back.
        self.word
            .compare_exchange(
                expected.0,
                expected.freed().0,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .map(|_| ())
            .map_err(|seen| Word(seen).count())
    }

    /// Any live state → Free regardless of the count: every outstanding reference of
    /// `epoch` becomes stale and its release a no-op.
    pub(crate) fn revoke(&self, epoch: u32) {
        let mut current = Word(self.word.load(Ordering::Relaxed));
        loop {
            assert!(
                current.epoch() == epoch && current.state() != State::Free,
                "fdlend: revoke on {current:?}, expected live epoch {epoch}"
            );
            // AcqRel: acquire the releases that did happen, and publish the new epoch.
            match self.word.compare_exchange_weak(
                current.0,
                current.freed().0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(seen) => current = Word(seen),
            }
        }
    }
}

#[cfg(not(fdlend_broken_ordering))]
const DRAIN_ORDERING: Ordering = Ordering::AcqRel;
/// The deliberately broken build: the drainer does not acquire the other releases,
/// so a loan's last use of the fd is not ordered before the close. The loom model
/// `broken_ordering_is_caught` must fail with it.
#[cfg(fdlend_broken_ordering)]
const DRAIN_ORDERING: Ordering = Ordering::Relaxed;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn word_round_trips_its_fields() {
        let word = Word::new(u32::MAX, State::Closing, COUNT_MAX);
        assert_eq!(
            (word.epoch(), word.state(), word.count()),
            (u32::MAX, State::Closing, COUNT_MAX)
        );
        assert_eq!(
            word.freed(),
            Word::new(0, State::Free, 0),
            "epoch wraps, state and count reset"
        );
    }

    #[test]
    fn register_counts_the_owner_and_refuses_a_live_slot() {
        let slot = Liveness::new();
        assert_eq!(slot.register(), Ok(0));
        assert_eq!(slot.load(), Word::new(0, State::Open, 1));
        assert_eq!(slot.register(), Err(Refusal::Live));
    }

    #[test]
    fn new_references_stop_at_closing_but_clones_continue() {
        let slot = Liveness::new();
        let epoch = slot.register().unwrap();
        slot.acquire(epoch, Taking::New, COUNT_MAX).unwrap();
        slot.begin_close(epoch);
        assert_eq!(
            slot.acquire(epoch, Taking::New, COUNT_MAX),
            Err(Refusal::Closing)
        );
        slot.acquire(epoch, Taking::Clone, COUNT_MAX).unwrap();
        assert_eq!(slot.load().count(), 3);
    }

    #[test]
    fn the_last_release_of_a_closing_slot_frees_it_once() {
        let slot = Liveness::new();
        let epoch = slot.register().unwrap();
        slot.acquire(epoch, Taking::New, COUNT_MAX).unwrap();
        slot.begin_close(epoch);
        assert_eq!(slot.release(epoch, Holder::Owner), Released::Kept);
        assert_eq!(slot.load(), Word::new(epoch, State::Orphaned, 1));
        assert_eq!(
            slot.release(epoch, Holder::Loan),
            Released::Drained,
            "the loan was last"
        );
        assert_eq!(slot.load(), Word::new(1, State::Free, 0));
        assert_eq!(
            slot.release(epoch, Holder::Loan),
            Released::Stale,
            "a second release finds nothing"
        );
    }

    #[test]
    fn saturation_refuses_at_the_limit_and_loses_nothing() {
        let slot = Liveness::new();
        let epoch = slot.register().unwrap();
        slot.acquire(epoch, Taking::New, 1).unwrap();
        assert_eq!(slot.acquire(epoch, Taking::New, 1), Err(Refusal::Saturated));
        assert_eq!(
            slot.acquire(epoch, Taking::Clone, 1),
            Err(Refusal::Saturated)
        );
        assert_eq!(slot.load().count(), 2, "the owner and one loan");
    }

    #[test]
    fn the_limit_stays_exact_once_the_owner_is_gone() {
        let slot = Liveness::new();
        let epoch = slot.register().unwrap();
        slot.acquire(epoch, Taking::New, 1).unwrap();
        slot.begin_close(epoch);
        slot.release(epoch, Holder::Owner);
        assert_eq!(
            slot.acquire(epoch, Taking::Clone, 1),
            Err(Refusal::Saturated),
            "one loan is still the limit"
        );
        assert_eq!(slot.load(), Word::new(epoch, State::Orphaned, 1));
    }

    #[test]
    fn old_epochs_read_closed_then_stale_after_reuse() {
        let slot = Liveness::new();
        let old = slot.register().unwrap();
        assert_eq!(slot.retire_if_unlent(old), Ok(()));
        assert_eq!(
            slot.acquire(old, Taking::New, COUNT_MAX),
            Err(Refusal::Closed)
        );
        let new = slot.register().unwrap();
        assert_ne!(old, new);
        assert_eq!(
            slot.acquire(old, Taking::New, COUNT_MAX),
            Err(Refusal::Stale)
        );
        assert_eq!(slot.release(old, Holder::Loan), Released::Stale);
        assert_eq!(
            slot.load().count(),
            1,
            "the new incarnation's count is untouched"
        );
    }

    #[test]
    fn retire_fails_while_lent_and_revoke_does_not() {
        let slot = Liveness::new();
        let epoch = slot.register().unwrap();
        slot.acquire(epoch, Taking::New, COUNT_MAX).unwrap();
        assert_eq!(slot.retire_if_unlent(epoch), Err(2));
        slot.revoke(epoch);
        assert_eq!(slot.release(epoch, Holder::Loan), Released::Stale);
        assert_eq!(slot.load(), Word::new(epoch + 1, State::Free, 0));
    }
}
