//! The liveness word: one `AtomicU64` per lent file that says whether the file may
//! still be used, and by how many.
//!
//! ```text
//!  63        40   39     38      37       36      35      34          0
//! +------------+------+-------+--------+-------+-------+-------------+
//! |  raw (24)  | DEAD |REVOKED|ORPHANED|CLOSING|LIMITED| count (35)  |
//! +------------+------+-------+--------+-------+-------+-------------+
//! ```
//!
//! * **count** is the number of counted references: the owner's own (unless
//!   `ORPHANED`), every loan, every raw token, and for a moment every attempt to take
//!   one. Taking and giving back are one unconditional `fetch_add`/`fetch_sub` each, as
//!   in `Arc`: an attempt that turns out not to be allowed gives its unit back.
//! * **raw** counts which of those references are raw tokens, so a raw return can
//!   never take a safe loan's count (see `Liveness::release_raw`).
//! * **LIMITED**: the file has a loan limit below [`MAX_LOANS`]. Without it a take
//!   checks the count against a constant, reading nothing but the word it just
//!   added to; with it, takes go the slow way and read the limit.
//! * **CLOSING**: the owner has begun closing; new loans are refused, clones are not.
//! * **ORPHANED**: the owner's own reference is gone too; only loans remain, so the
//!   loan limit stays exact while the file drains.
//! * **REVOKED**: the owner closed the file while loans were out (`close_now`); the
//!   word is detached from its fd number and its loans only count down.
//! * **DEAD**: no file. A fresh word is dead; the release that takes a closing or
//!   revoked word's count to zero makes it dead again, with one compare-and-swap that
//!   only one thread can win.
//!
//! This module knows nothing about fds or syscalls; it is the state machine alone.
//! Which file a word counts (its fd and incarnation) is kept beside it by
//! `record.rs`; a word is reused only once it is dead, so a reference counted in it
//! always belongs to the file that was live when it was taken.

use crate::sync::{AtomicU64, Ordering};

const COUNT_BITS: u32 = 35;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const LIMITED: u64 = 1 << 35;
const CLOSING: u64 = 1 << 36;
const ORPHANED: u64 = 1 << 37;
const REVOKED: u64 = 1 << 38;
const DEAD: u64 = 1 << 39;
const RAW_ONE: u64 = 1 << 40;
const RAW_MASK: u64 = !((1 << 40) - 1);
/// New raw tokens are refused from here on, which leaves 2^23 units of headroom for
/// the transient `+1`s of racing attempts before the field could wrap.
const RAW_LIMIT: u64 = 1 << 23;

/// The most loans a word admits (the owner's reference aside): far below the count
/// field's capacity, so transient attempts can never carry into the flags.
pub(crate) const MAX_LOANS: u32 = (1 << 30) - 2;
/// The count below which any unlimited word admits one more reference (the
/// owner's included).
const ADMIT_BELOW: u64 = MAX_LOANS as u64 + 1;

/// What a word says about its file, for telling a refusal apart.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum State {
    /// No file.
    Dead,
    /// Lent: new loans allowed.
    Open,
    /// The owner is closing: no new loans; existing ones drain.
    Closing,
    /// Closed by the owner while loans were out; those only count down.
    Revoked,
}

/// One value of the word.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Word(u64);

impl Word {
    pub(crate) const fn count(self) -> u64 {
        self.0 & COUNT_MASK
    }

    pub(crate) const fn raw(self) -> u64 {
        self.0 >> 40
    }

    pub(crate) const fn counts_owner(self) -> bool {
        self.0 & (ORPHANED | REVOKED | DEAD) == 0
    }

    /// Loans and raw tokens, the owner's reference aside.
    pub(crate) const fn loans(self) -> u64 {
        self.count() - self.counts_owner() as u64
    }

    pub(crate) const fn state(self) -> State {
        if self.0 & DEAD != 0 {
            State::Dead
        } else if self.0 & REVOKED != 0 {
            State::Revoked
        } else if self.0 & (CLOSING | ORPHANED) != 0 {
            State::Closing
        } else {
            State::Open
        }
    }
}

/// Why a reference could not be taken or given back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Refusal {
    /// The word is not open for this kind of reference (see the `State`).
    Not(State),
    /// The count has reached the limit.
    Saturated,
    /// A raw return found no raw token outstanding.
    NotLent,
    /// Registration found the word live.
    Live,
}

/// What a release did.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[must_use]
pub(crate) enum Released {
    /// One reference fewer; others remain (or another thread finishes).
    Kept,
    /// This was the last reference of a closing file: the word is dead now and the
    /// caller must finish the close, exactly once.
    Drained,
    /// This was the last reference of a revoked word: it is dead now and the caller
    /// must recycle its record (the fd was closed by the revoke).
    Retired,
}

/// The atomic word itself.
pub(crate) struct Liveness {
    word: AtomicU64,
}

impl Liveness {
    /// A dead word: no file yet.
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Liveness {
        Liveness {
            word: AtomicU64::new(DEAD),
        }
    }

    /// A dead word: no file yet (loom atomics have no `const fn new`).
    #[cfg(loom)]
    pub(crate) fn new() -> Liveness {
        Liveness {
            word: AtomicU64::new(DEAD),
        }
    }

    /// A snapshot, for diagnostics and checks.
    #[inline]
    pub(crate) fn load(&self) -> Word {
        // Acquire pairs with `open`'s Release: a caller who sees the word live also
        // sees the record fields written before it opened.
        Word(self.word.load(Ordering::Acquire))
    }

    /// Dead → Open, counting the owner's reference. Attempts that are in flight on
    /// the dead word (a stale pin's `+1`, given back soon) are carried over, so their
    /// give-back balances. The caller holds the fd number's registration lock and has
    /// written the record's fields, which this Release publishes.
    pub(crate) fn open(&self, limited: bool) -> Result<(), Refusal> {
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            if current & DEAD == 0 {
                return Err(Refusal::Live);
            }
            let next = (current & COUNT_MASK) + 1 + if limited { LIMITED } else { 0 };
            // Release pairs with the Acquire of every pin and `load`: whoever sees
            // this incarnation live sees its fd and incarnation too.
            match self.word.compare_exchange_weak(
                current,
                next,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }

    /// One more reference by a holder of one (a clone, the owner's loan, a local
    /// loan sent): one `fetch_add`. `admit_below` gives the loan limit + 1; it is
    /// only asked for when the word is `LIMITED` or near full.
    #[inline]
    pub(crate) fn acquire_held(&self, admit_below: impl FnOnce() -> u64) -> Result<(), Refusal> {
        // Relaxed, as `Arc::clone`: the caller's own reference keeps the word live and
        // it already synchronised with the registration when it got that reference.
        let old = self.word.fetch_add(1, Ordering::Relaxed);
        // One compare with a constant covers the common case: no limit of its own,
        // count under the global one, not orphaned (where the owner no longer counts)
        // and not revoked.
        if old & (COUNT_MASK | LIMITED | ORPHANED | REVOKED) < ADMIT_BELOW {
            return Ok(());
        }
        self.acquire_held_slow(Word(old), admit_below())
    }

    #[cold]
    #[inline(never)]
    fn acquire_held_slow(&self, old: Word, admit_below: u64) -> Result<(), Refusal> {
        let refusal = match old.state() {
            State::Revoked | State::Dead => Refusal::Not(old.state()),
            _ if old.loans() < admit_below - 1 => return Ok(()),
            _ => Refusal::Saturated,
        };
        // Relaxed: the caller still holds its own reference, so this never drains and
        // publishes nothing.
        self.word.fetch_sub(1, Ordering::Relaxed);
        Err(refusal)
    }

    /// A new reference from nothing (a ticket's pin): one `fetch_add`. On `Err` the
    /// attempt's unit is still counted and the caller must `release` it (which may
    /// drain the word: the attempt was then the last reference).
    #[inline]
    pub(crate) fn try_acquire_new(&self, admit_below: impl FnOnce() -> u64) -> Result<(), Word> {
        // Acquire pairs with `open`'s Release: the new reference may read the record's
        // fields and use the fd, so it must see the registration.
        let old = self.word.fetch_add(1, Ordering::Acquire);
        // Any flag (limited, closing, orphaned, revoked, dead) or a full count goes
        // the slow way.
        if old & !RAW_MASK < ADMIT_BELOW {
            return Ok(());
        }
        let old = Word(old);
        match old.state() {
            State::Open if old.loans() < admit_below() - 1 => Ok(()),
            _ => Err(old),
        }
    }

    /// Gives one reference back: one `fetch_sub`.
    #[inline]
    pub(crate) fn release(&self) -> Released {
        // Release pairs with the Acquire of whoever drains the word: every use of the
        // fd through this reference happens before the close.
        let old = self.word.fetch_sub(1, Ordering::Release);
        if old & COUNT_MASK != 1 {
            return Released::Kept;
        }
        self.release_last(Word(old - 1))
    }

    /// The count just reached zero at `now`: claim the word for the one thread that
    /// finishes, unless an attempt slipped in (its give-back will claim instead).
    #[cold]
    #[inline(never)]
    fn release_last(&self, now: Word) -> Released {
        if now.0 & DEAD != 0 {
            // A refused attempt on a dead word gave its unit back.
            return Released::Kept;
        }
        assert!(
            !now.counts_owner(),
            "fdlend: liveness word {now:?} released below the owner's reference"
        );
        // Acquire (in the claim) pairs with every reference's Release in `release`:
        // all of them happened before the close or the recycling that follows.
        match self
            .word
            .compare_exchange(now.0, DEAD, CLAIM_ORDERING, Ordering::Relaxed)
        {
            Ok(_) if now.0 & REVOKED != 0 => Released::Retired,
            Ok(_) => Released::Drained,
            Err(_) => Released::Kept,
        }
    }

    /// The owner begins closing: new loans stop, existing ones drain.
    pub(crate) fn begin_close(&self) {
        // Relaxed: this publishes nothing. The close signal reaches the drainer through
        // the record's mutex, and the owner's own `release_owner` (Release, later in
        // this thread) is what the drainer's claim acquires.
        self.word.fetch_or(CLOSING, Ordering::Relaxed);
    }

    /// The owner gives its own reference back (its `Lender` and local loans are all
    /// gone); from now on the count is loans only.
    pub(crate) fn release_owner(&self) -> Released {
        // Sets ORPHANED (clear until now: the owner releases once) and subtracts one
        // in the same add. Release: as for any reference in `release`.
        let old = Word(
            self.word
                .fetch_add(ORPHANED.wrapping_sub(1), Ordering::Release),
        );
        assert!(
            old.counts_owner() && old.0 & (CLOSING | REVOKED) != 0 || old.0 & REVOKED != 0,
            "fdlend: owner released its reference of {old:?} without closing"
        );
        if old.count() != 1 {
            return Released::Kept;
        }
        self.release_last(Word(old.0 + ORPHANED - 1))
    }

    /// Open with only the owner's reference → Dead, in one step. Fails (with what
    /// it saw) while anything else is counted, an attempt in flight included.
    pub(crate) fn retire_if_unlent(&self) -> Result<(), Word> {
        // Relaxed: only LIMITED is read here, which is fixed while the caller holds
        // the owner's reference.
        let limited = self.word.load(Ordering::Relaxed) & LIMITED;
        // Acquire pairs with every reference's Release in `release`: their uses of the
        // fd happen before the owner takes it back.
        self.word
            .compare_exchange(1 | limited, DEAD, Ordering::Acquire, Ordering::Relaxed)
            .map(|_| ())
            .map_err(Word)
    }

    /// Any live word → Revoked: every outstanding reference only counts down from
    /// now on, and pins are refused. The owner still holds its reference (give it
    /// back with `release_owner`).
    pub(crate) fn revoke(&self) {
        // AcqRel: acquire the releases that did happen before the fd is closed, and
        // publish the revocation to pins that read the word afterwards.
        let old = Word(self.word.fetch_or(REVOKED, Ordering::AcqRel));
        assert!(
            old.counts_owner(),
            "fdlend: revoke of {old:?}, which the owner no longer holds"
        );
    }

    /// Closing (owner released) → Open, counting the owner's reference again: a
    /// bounded close that ran out of time takes its file back. Refused (with what it
    /// saw) once the count has reached zero or the word is dead, and while the
    /// owner's reference is still counted (local loans share it).
    ///
    /// Exactly one of this and the drain's claim wins, because both are one
    /// compare-and-swap on the word and each requires what the other destroys: the
    /// claim (`release_last`) swaps a zero count for `DEAD`, while this swaps a
    /// nonzero count, `CLOSING | ORPHANED`, for one more count without them. A
    /// release that took the count to zero and lost its claim to a pin in flight
    /// leaves the count above zero again; the reopen may then win, and the pin, which
    /// read `CLOSING` in its own add, gives its unit back without draining (the
    /// owner's unit is counted again). So there is never a double close, nor a file
    /// both reopened and drained; a reopen refused at zero leaves a claim that some
    /// release in flight is bound to make.
    pub(crate) fn reopen(&self) -> Result<(), Word> {
        // Relaxed: see the CAS.
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let word = Word(current);
            if current & DEAD != 0 || word.count() == 0 || word.counts_owner() {
                return Err(word);
            }
            assert!(
                current & (REVOKED | CLOSING) == CLOSING,
                "fdlend: reopen of {word:?}, which no closing owner left"
            );
            let next = (current & !(CLOSING | ORPHANED)) + 1;
            // Relaxed: the owner takes back the reference it gave away, and nothing
            // is published or consumed with it. No drain happens for this close, so
            // the loans' releases need not happen before anything (the fd stays
            // open), and the owner's later uses are ordered by its own thread or, for
            // a new close, by its next `release_owner`.
            match self.word.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(seen) => current = seen,
            }
        }
    }

    /// One more reference by a holder of one, counted as a raw token (`lend_raw`,
    /// `lend_fd`): one `fetch_add` of both units.
    #[inline]
    pub(crate) fn acquire_held_raw(
        &self,
        admit_below: impl FnOnce() -> u64,
    ) -> Result<(), Refusal> {
        // Relaxed: as in `acquire_held`.
        let old = self.word.fetch_add(1 + RAW_ONE, Ordering::Relaxed);
        if old & (COUNT_MASK | LIMITED | ORPHANED | REVOKED) < ADMIT_BELOW
            && Word(old).raw() < RAW_LIMIT
        {
            return Ok(());
        }
        self.acquire_held_raw_slow(Word(old), admit_below())
    }

    #[cold]
    #[inline(never)]
    fn acquire_held_raw_slow(&self, old: Word, admit_below: u64) -> Result<(), Refusal> {
        let refusal = match old.state() {
            State::Revoked | State::Dead => Refusal::Not(old.state()),
            _ if old.loans() < admit_below - 1 && old.raw() < RAW_LIMIT => return Ok(()),
            _ => Refusal::Saturated,
        };
        // Relaxed: as in `acquire_held_slow`.
        self.word.fetch_sub(1 + RAW_ONE, Ordering::Relaxed);
        Err(refusal)
    }

    /// One more raw token by a holder of a reference: the reference becomes the
    /// token's (`Loan::into_raw`).
    pub(crate) fn mark_raw(&self) -> Result<(), Refusal> {
        // Relaxed: the caller's reference keeps the word live; only the raw field
        // changes, which nothing orders against.
        let old = Word(self.word.fetch_add(RAW_ONE, Ordering::Relaxed));
        if old.raw() < RAW_LIMIT {
            return Ok(());
        }
        self.word.fetch_sub(RAW_ONE, Ordering::Relaxed);
        Err(Refusal::Saturated)
    }

    /// A raw token's reference becomes a plain one again (`Loan::from_raw`), if a raw
    /// token is outstanding.
    pub(crate) fn unmark_raw(&self) -> Result<(), Refusal> {
        self.check_raw()?;
        // Relaxed: the reference itself stays counted.
        self.word.fetch_sub(RAW_ONE, Ordering::Relaxed);
        Ok(())
    }

    /// Gives a raw token's reference back, if a raw token is outstanding: a double
    /// return can then take another raw token's count, never a loan's or the owner's.
    #[inline]
    pub(crate) fn release_raw(&self) -> Result<Released, Refusal> {
        self.check_raw()?;
        // Release: as in `release`.
        let old = self.word.fetch_sub(1 + RAW_ONE, Ordering::Release);
        if old & COUNT_MASK != 1 {
            return Ok(Released::Kept);
        }
        Ok(self.release_last(Word(old - 1 - RAW_ONE)))
    }

    /// The check before a raw give-back: a raw token is outstanding on a live word.
    /// A correct caller holds one, so the word cannot change under it; a caller
    /// racing a double return of the same token is outside the contract.
    #[inline]
    fn check_raw(&self) -> Result<(), Refusal> {
        let word = Word(self.word.load(Ordering::Relaxed));
        match word.state() {
            State::Dead => Err(Refusal::Not(State::Dead)),
            _ if word.raw() == 0 => Err(Refusal::NotLent),
            _ => Ok(()),
        }
    }
}

#[cfg(not(fdlend_broken_ordering))]
const CLAIM_ORDERING: Ordering = Ordering::Acquire;
/// The deliberately broken build: the drainer does not acquire the other releases,
/// so a loan's last use of the fd is not ordered before the close. The loom model
/// `broken_ordering_is_caught` must fail with it.
#[cfg(fdlend_broken_ordering)]
const CLAIM_ORDERING: Ordering = Ordering::Relaxed;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn any() -> u64 {
        ADMIT_BELOW
    }

    /// A limit of `n` loans.
    fn limit(n: u64) -> impl Fn() -> u64 {
        move || n + 1
    }

    fn open() -> Liveness {
        let word = Liveness::new();
        word.open(false).unwrap();
        word
    }

    fn open_limited() -> Liveness {
        let word = Liveness::new();
        word.open(true).unwrap();
        word
    }

    #[test]
    fn open_counts_the_owner_and_refuses_a_live_word() {
        let word = open();
        assert_eq!(word.load(), Word(1));
        assert_eq!(word.load().state(), State::Open);
        assert_eq!(word.open(false), Err(Refusal::Live));
    }

    #[test]
    fn new_references_stop_at_closing_but_clones_continue() {
        let word = open();
        word.try_acquire_new(any).unwrap();
        word.begin_close();
        let refused = word.try_acquire_new(any).unwrap_err();
        assert_eq!(refused.state(), State::Closing);
        assert_eq!(
            word.release(),
            Released::Kept,
            "the refused attempt gives back"
        );
        word.acquire_held(any).unwrap();
        assert_eq!(word.load().count(), 3);
    }

    #[test]
    fn the_last_release_of_a_closing_word_kills_it_once() {
        let word = open();
        word.acquire_held(any).unwrap();
        word.begin_close();
        assert_eq!(word.release_owner(), Released::Kept);
        assert_eq!(word.load().loans(), 1);
        assert_eq!(word.release(), Released::Drained, "the loan was last");
        assert_eq!(word.load().state(), State::Dead);
    }

    #[test]
    fn an_attempt_in_flight_takes_over_the_drain() {
        let word = open();
        word.acquire_held(any).unwrap();
        word.begin_close();
        assert_eq!(word.release_owner(), Released::Kept);
        // A pin adds its unit, then the last loan returns: the loan cannot claim.
        assert!(word.try_acquire_new(any).is_err());
        assert_eq!(word.release(), Released::Kept);
        assert_eq!(
            word.release(),
            Released::Drained,
            "the pin's give-back drains"
        );
    }

    #[test]
    fn saturation_refuses_at_the_limit_and_loses_nothing() {
        let word = open_limited();
        word.acquire_held(limit(1)).unwrap();
        assert_eq!(word.acquire_held(limit(1)), Err(Refusal::Saturated));
        assert!(word.try_acquire_new(limit(1)).is_err());
        assert_eq!(word.release(), Released::Kept);
        assert_eq!(word.load().count(), 2, "the owner and one loan");
    }

    #[test]
    fn the_limit_stays_exact_once_the_owner_is_gone() {
        let word = open_limited();
        word.acquire_held(limit(1)).unwrap();
        word.begin_close();
        assert_eq!(word.release_owner(), Released::Kept);
        assert_eq!(word.acquire_held(limit(1)), Err(Refusal::Saturated));
        assert_eq!(word.load().loans(), 1, "one loan is still the limit");
    }

    #[test]
    fn a_limited_word_admits_exactly_up_to_its_limit_and_retires() {
        let word = open_limited();
        word.acquire_held(limit(2)).unwrap();
        word.try_acquire_new(limit(2)).unwrap();
        assert!(word.try_acquire_new(limit(2)).is_err());
        assert_eq!(word.release(), Released::Kept);
        assert_eq!(word.load().loans(), 2);
        assert_eq!(word.release(), Released::Kept);
        assert_eq!(word.release(), Released::Kept);
        assert_eq!(
            word.retire_if_unlent(),
            Ok(()),
            "LIMITED does not hide the owner"
        );
    }

    #[test]
    fn a_dead_word_refuses_and_reopens_with_attempts_in_flight() {
        let word = open();
        assert_eq!(word.retire_if_unlent(), Ok(()));
        let refused = word.try_acquire_new(any).unwrap_err();
        assert_eq!(refused.state(), State::Dead);
        word.open(false).unwrap();
        assert_eq!(
            word.load().count(),
            2,
            "the owner and the attempt in flight"
        );
        assert_eq!(word.release(), Released::Kept, "the attempt gives back");
        assert_eq!(word.load(), Word(1));
    }

    #[test]
    fn a_revoked_word_counts_down_to_retired() {
        let word = open();
        word.acquire_held(any).unwrap();
        assert_eq!(word.retire_if_unlent(), Err(Word(2)));
        word.revoke();
        assert_eq!(word.acquire_held(any), Err(Refusal::Not(State::Revoked)));
        assert_eq!(word.release_owner(), Released::Kept);
        assert_eq!(word.release(), Released::Retired);
        assert_eq!(word.load().state(), State::Dead);
    }

    #[test]
    fn raw_returns_never_take_a_loans_count() {
        let word = open();
        word.acquire_held(any).unwrap();
        assert_eq!(word.release_raw(), Err(Refusal::NotLent));
        word.acquire_held(any).unwrap();
        word.mark_raw().unwrap();
        assert_eq!(word.release_raw(), Ok(Released::Kept));
        assert_eq!(word.release_raw(), Err(Refusal::NotLent), "a double return");
        assert_eq!(word.load().count(), 2, "the owner and the loan");
    }
    #[test]
    fn a_reopen_and_the_drain_claim_exclude_each_other() {
        let word = open();
        word.acquire_held(any).unwrap();
        word.begin_close();
        assert_eq!(word.release_owner(), Released::Kept);
        assert_eq!(
            word.reopen(),
            Ok(()),
            "a loan is out: the owner takes it back"
        );
        assert_eq!(word.load().state(), State::Open);
        assert_eq!(word.load().loans(), 1);
        assert_eq!(word.release(), Released::Kept, "the owner is counted again");
        word.begin_close();
        assert_eq!(word.release_owner(), Released::Drained);
        assert!(word.reopen().is_err(), "drained: too late");
        // A pin in flight holds the count up after the last loan's claim failed.
        let word = open();
        word.acquire_held(any).unwrap();
        word.begin_close();
        assert_eq!(word.release_owner(), Released::Kept);
        assert!(word.try_acquire_new(any).is_err());
        assert_eq!(word.release(), Released::Kept);
        assert_eq!(word.reopen(), Ok(()));
        assert_eq!(
            word.release(),
            Released::Kept,
            "the pin gives back, no drain"
        );
        assert_eq!(word.load(), Word(1));
    }
}
