//! The liveness word: one `AtomicU64` per lent file that says whether the file may
//! still be used, and by how many.
//!
//! ```text
//!  63               30   29     28      27      26      25     24   23        0
//! +-------------------+------+-------+--------+-------+-------+-----+-----------+
//! | count field (34)  | DEAD |REVOKED|ORPHANED|CLOSING|LIMITED|GUARD|  raw (24) |
//! +-------------------+------+-------+--------+-------+-------+-----+-----------+
//! ```
//!
//! * **count** is the number of counted references: the owner's own (unless
//!   `ORPHANED`), every loan, and for a moment every attempt to take one. Taking and
//!   giving back are one unconditional add each, as in `Arc`: an attempt that turns
//!   out not to be allowed gives its unit back. The field holds the count plus a
//!   base that depends on the flags (see below), so that the *sign bit of the sum*
//!   says everything the hot paths need: they are `lock add` + `js`, like `Arc`'s
//!   `lock inc` + `jle`, with no load of the old value, no mask and no compare.
//! * **base**: a word without flags keeps `FAST_BASE` (2^33 - 2^30) in the field, so
//!   the sum turns negative exactly when the count reaches 2^30 (the loan limit of
//!   an unlimited word). A word with any flag keeps `SLOW_BASE` (2^33), so it is
//!   negative at every count. Hence, after any add or subtract of one unit:
//!   non-negative ⇔ no flag and the count below 2^30. A take that stays
//!   non-negative is admitted; a give-back that stays non-negative cannot be the
//!   last (no flag means the owner's own unit is still counted). Everything else
//!   goes to a slow path that decodes the word. Changing the flags moves the base
//!   in the same atomic step, so the count itself never changes meaning.
//! * **raw** counts the raw tokens, apart from `count`: a raw return is one
//!   subtraction on this field alone, checked afterwards, so a return with no raw
//!   token outstanding (a double return) borrows the **GUARD** bit (always set in
//!   a settled word) for a moment and is undone without ever touching a safe
//!   loan's or the owner's unit (see `Liveness::release_raw`). The word is free (no
//!   reference) when count and raw are both zero and the guard is set.
//! * **LIMITED**: the file has a loan limit below [`MAX_LOANS`]: takes go the slow
//!   way and read the limit.
//! * **CLOSING**: the owner has begun closing; new loans are refused, clones are not.
//! * **ORPHANED**: the owner's own reference is gone too; only loans remain, so the
//!   loan limit stays exact while the file drains.
//! * **REVOKED**: the owner closed the file while loans were out (`close_now`); the
//!   word is detached from its fd number and its loans only count down.
//! * **DEAD**: no file. A fresh word is dead; the release that takes a closing or
//!   revoked word's count to zero makes it dead again, with one compare-and-swap that
//!   only one thread can win.
//!
//! The field has room for both bases with every count a word can reach (at most
//! 2^30 + one attempt in flight per thread): nothing ever carries out of bit 63.
//!
//! This module knows nothing about fds or syscalls; it is the state machine alone.
//! Which file a word counts (its fd and incarnation) is kept beside it by
//! `record.rs`; a word is reused only once it is dead, so a reference counted in it
//! always belongs to the file that was live when it was taken.

use crate::sync::{AtomicU64, Ordering};

const RAW_ONE: u64 = 1;
/// Set in every settled word: a raw return with no token borrows it, not the flags.
const GUARD: u64 = 1 << 24;
/// The raw tokens and the guard: `GUARD + raw` in a settled word.
const RAW_FIELD: u64 = (1 << 25) - 1;
const LIMITED: u64 = 1 << 25;
const CLOSING: u64 = 1 << 26;
const ORPHANED: u64 = 1 << 27;
const REVOKED: u64 = 1 << 28;
const DEAD: u64 = 1 << 29;
const FLAGS: u64 = LIMITED | CLOSING | ORPHANED | REVOKED | DEAD;
const COUNT_SHIFT: u32 = 30;
/// One counted reference.
const UNIT: u64 = 1 << COUNT_SHIFT;
/// The count field of a word without flags, at count zero: the sum turns negative
/// when the count reaches 2^30.
const FAST_BASE: u64 = ((1 << 33) - (1 << 30)) << COUNT_SHIFT;
/// The count field of a word with any flag, at count zero: negative at every count.
const SLOW_BASE: u64 = 1 << 63;
/// The dead word, as fresh and as every claim leaves it.
const DEAD_WORD: u64 = SLOW_BASE | DEAD | GUARD;
/// New raw tokens are refused from here on (bit 23 of a settled field), which leaves
/// 2^23 units of headroom below the guard for racing attempts.
const RAW_LIMIT: u64 = 1 << 23;
/// How often a raw return that found no token tries again: another return's
/// subtraction may have been in flight (its undo is two instructions away unless its
/// thread is preempted), hiding this return's token for that moment.
#[cfg(not(loom))]
const RETURN_RETRIES: u32 = 64;
/// Under loom one retry shows the path; more would only multiply the model's states.
#[cfg(loom)]
const RETURN_RETRIES: u32 = 1;

/// The most loans a word admits (the owner's reference aside): where an unlimited
/// word's sum turns negative (count 2^30, the owner included), so the hot paths
/// test nothing else. Raw tokens count apart, up to `RAW_LIMIT` more (a `LIMITED`
/// word's own limit covers both).
pub(crate) const MAX_LOANS: u32 = (1 << 30) - 2;
/// The count below which any unlimited word admits one more reference (the
/// owner's included).
const ADMIT_BELOW: u64 = MAX_LOANS as u64 + 1;
// The fast side ends exactly where an unlimited word stops admitting...
const _: () = assert!(FAST_BASE + (ADMIT_BELOW + 1) * UNIT == SLOW_BASE);
// ...and a flagged word at the limit, with an attempt in flight on every thread any
// process can have (2^22), still fits in the field.
const _: () = assert!(((SLOW_BASE >> COUNT_SHIFT) + ADMIT_BELOW + (1 << 22)) < 1 << 34);

/// The base a word with these flags keeps in its count field.
const fn base(flags: u64) -> u64 {
    if flags == 0 {
        FAST_BASE
    } else {
        SLOW_BASE
    }
}

/// `word` with its flags replaced by `flags`, the base moved with them.
const fn with_flags(word: u64, flags: u64) -> u64 {
    let old = word & FLAGS;
    (word - old - base(old)).wrapping_add(base(flags)) + flags
}

/// What to add to a word whose flags are `flags` to set `flag` (not set yet): the
/// flag, and the base's move if it is the word's first.
const fn flag_delta(flags: u64, flag: u64) -> u64 {
    flag.wrapping_add(base(flags | flag))
        .wrapping_sub(base(flags))
}

/// Whether a word after an add or subtract of one unit is on the fast side: no
/// flag, count below 2^30. One sign test of the sum the add produced.
#[inline(always)]
const fn fast(after: u64) -> bool {
    (after as i64) >= 0
}

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
    const fn flags(self) -> u64 {
        self.0 & FLAGS
    }

    pub(crate) const fn count(self) -> u64 {
        (self.0 - base(self.flags())) >> COUNT_SHIFT
    }

    /// Raw tokens outstanding (a field whose guard a double return borrowed, for
    /// the moment before its undo, reads 0).
    pub(crate) const fn raw(self) -> u64 {
        (self.0 & RAW_FIELD).saturating_sub(GUARD)
    }

    /// Whether anything keeps the word live: a counted reference, a raw token, or a
    /// double return in flight (its undo finishes for it).
    const fn held(self) -> bool {
        self.count() != 0 || self.0 & RAW_FIELD != GUARD
    }

    pub(crate) const fn counts_owner(self) -> bool {
        self.0 & (ORPHANED | REVOKED | DEAD) == 0
    }

    /// Loans and raw tokens, the owner's reference aside.
    pub(crate) const fn loans(self) -> u64 {
        self.count() - self.counts_owner() as u64 + self.raw()
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
            word: AtomicU64::new(DEAD_WORD),
        }
    }

    /// A dead word: no file yet (loom atomics have no `const fn new`).
    #[cfg(loom)]
    pub(crate) fn new() -> Liveness {
        Liveness {
            word: AtomicU64::new(DEAD_WORD),
        }
    }

    /// A snapshot, for diagnostics and checks.
    #[inline]
    pub(crate) fn load(&self) -> Word {
        // Acquire pairs with `open`'s Release: a caller who sees the word live also
        // sees the record fields written before it opened.
        Word(self.word.load(Ordering::Acquire))
    }

    /// Changes the flags (and adds to the count) in one compare-and-swap: `next`
    /// maps the word seen to the word wanted, or refuses with what it saw.
    fn update<E>(
        &self,
        success: Ordering,
        mut next: impl FnMut(u64) -> Result<u64, E>,
    ) -> Result<Word, E> {
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            match self.word.compare_exchange_weak(
                current,
                next(current)?,
                success,
                Ordering::Relaxed,
            ) {
                Ok(old) => return Ok(Word(old)),
                Err(seen) => current = seen,
            }
        }
    }

    /// Dead → Open, counting the owner's reference. Attempts that are in flight on
    /// the dead word (a stale pin's unit, given back soon) are carried over, so their
    /// give-back balances; so are raw over-returns in flight. The caller holds the fd
    /// number's registration lock and has written the record's fields, which this
    /// Release publishes.
    pub(crate) fn open(&self, limited: bool) -> Result<(), Refusal> {
        let flags = if limited { LIMITED } else { 0 };
        // Release pairs with the Acquire of every pin and `load`: whoever sees this
        // incarnation live sees its fd and incarnation too.
        self.update(Ordering::Release, |current| {
            if current & DEAD == 0 {
                return Err(Word(current));
            }
            Ok(with_flags(current, flags) + UNIT)
        })
        .map(drop)
        .map_err(|_| Refusal::Live)
    }

    /// One more reference by a holder of one (a clone, the owner's loan, a local
    /// loan sent): one add, tested by its sign. `admit_below` gives the loan limit
    /// + 1; it is only asked for when the word has a flag or is full.
    #[inline]
    pub(crate) fn acquire_held(&self, admit_below: impl FnOnce() -> u64) -> Result<(), Refusal> {
        if self.add_held() {
            return Ok(());
        }
        self.acquire_held_slow(admit_below())
    }

    /// The add of `acquire_held`: true if that settled it (admitted). Otherwise the
    /// unit is counted and `acquire_held_slow` must decide.
    #[inline]
    pub(crate) fn add_held(&self) -> bool {
        // Relaxed, as `Arc::clone`: the caller's own reference keeps the word live and
        // it already synchronised with the registration when it got that reference.
        let old = self.word.fetch_add(UNIT, Ordering::Relaxed);
        // Non-negative: no flag (no limit of its own, not closing, orphaned or
        // revoked) and the count under the global limit. Only the sign of the sum is
        // read, so x86 tests the flags of a `lock add` (the slow path reads the word
        // again rather than keep `old`).
        fast(old.wrapping_add(UNIT))
    }

    /// Decides on the word as it is now, with this attempt's unit in it. That is as
    /// good as the word the add returned: the caller's reference keeps the word from
    /// dying, `REVOKED` never clears while it is counted, and every loan is admitted
    /// only at a moment when the count (admitted loans and attempts together) was
    /// within the limit, so the admitted loans never exceed it.
    #[cold]
    #[inline(never)]
    pub(crate) fn acquire_held_slow(&self, admit_below: u64) -> Result<(), Refusal> {
        // Relaxed: the count and the flags are all that is read; the caller holds a
        // reference, so nothing about the file itself is learnt here.
        let now = Word(self.word.load(Ordering::Relaxed));
        let refusal = match now.state() {
            State::Revoked | State::Dead => Refusal::Not(now.state()),
            _ if now.loans() < admit_below => return Ok(()),
            _ => Refusal::Saturated,
        };
        // Relaxed: the caller still holds its own reference, so this never drains and
        // publishes nothing.
        self.word.fetch_sub(UNIT, Ordering::Relaxed);
        Err(refusal)
    }

    /// A new reference from nothing (a ticket's pin): one add. On `Err` the
    /// attempt's unit is still counted and the caller must `release` it (which may
    /// drain the word: the attempt was then the last reference).
    #[inline]
    pub(crate) fn try_acquire_new(&self, admit_below: impl FnOnce() -> u64) -> Result<(), Word> {
        // Acquire pairs with `open`'s Release: the new reference may read the record's
        // fields and use the fd, so it must see the registration.
        let old = self.word.fetch_add(UNIT, Ordering::Acquire);
        // Any flag (limited, closing, orphaned, revoked, dead) or a full count makes
        // the sum negative.
        if fast(old.wrapping_add(UNIT)) {
            return Ok(());
        }
        Self::try_acquire_new_slow(Word(old), admit_below())
    }

    #[cold]
    #[inline(never)]
    fn try_acquire_new_slow(old: Word, admit_below: u64) -> Result<(), Word> {
        match old.state() {
            State::Open if old.loans() < admit_below - 1 => Ok(()),
            _ => Err(old),
        }
    }

    /// Gives one reference back: one add of minus one unit, tested by its sign.
    /// (`Record::release` makes the same two calls, with its slow path out of line.)
    #[cfg(test)]
    pub(crate) fn release(&self) -> Released {
        if self.subtract() {
            return Released::Kept;
        }
        self.release_slow()
    }

    /// The subtraction of `release`: true if that settled it (not the last).
    /// Otherwise `release_slow` must finish.
    #[inline]
    pub(crate) fn subtract(&self) -> bool {
        // Release pairs with the Acquire of whoever drains the word: every use of the
        // fd through this reference happens before the close. (An add of the
        // negation, not a subtraction, and only the sign of the sum read: x86 then
        // tests the flags of a `lock add`.)
        let old = self.word.fetch_add(UNIT.wrapping_neg(), Ordering::Release);
        // Non-negative: no flag, so the owner's own unit is still counted and this
        // was not the last.
        fast(old.wrapping_sub(UNIT))
    }

    /// A release that left the word negative (a flag is set, or it is full): if
    /// nothing holds it now, claim it. Reading the word again instead of keeping
    /// what the add returned loses nothing: the claim is a compare-and-swap from
    /// the word read, whoever's release made it free, and exactly one of the
    /// threads that find it free wins it.
    #[cold]
    #[inline(never)]
    pub(crate) fn release_slow(&self) -> Released {
        // Relaxed: the claim's own Acquire is what orders the releases before it.
        self.released(Word(self.word.load(Ordering::Relaxed)))
    }

    /// Something left the word at `now`: if nothing holds it any more, claim it.
    fn released(&self, now: Word) -> Released {
        if now.held() {
            return Released::Kept;
        }
        self.release_last(now)
    }

    /// Count and raw just reached zero at `now`: claim the word for the one thread
    /// that finishes, unless an attempt slipped in (its give-back will claim instead).
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
            .compare_exchange(now.0, DEAD_WORD, CLAIM_ORDERING, Ordering::Relaxed)
        {
            Ok(_) if now.0 & REVOKED != 0 => Released::Retired,
            Ok(_) => Released::Drained,
            Err(_) => Released::Kept,
        }
    }

    /// The owner begins closing: new loans stop, existing ones drain.
    pub(crate) fn begin_close(&self) {
        let flags = self.owners_flags();
        if flags & CLOSING != 0 {
            return;
        }
        // Relaxed: this publishes nothing. The close signal reaches the drainer through
        // the record's mutex, and the owner's own `release_owner` (Release, later in
        // this thread) is what the drainer's claim acquires.
        self.word
            .fetch_add(flag_delta(flags, CLOSING), Ordering::Relaxed);
    }

    /// The flags, read by the owner while its own unit is counted: then nothing but
    /// the owner changes them (a claim needs the count at zero, a registration a
    /// dead word), so the read stays true until the owner's next change, and that
    /// change can be one add instead of a compare-and-swap loop.
    fn owners_flags(&self) -> u64 {
        // Relaxed: only the flags are used, and only this thread writes them now.
        self.word.load(Ordering::Relaxed) & FLAGS
    }

    /// The owner gives its own reference back (its `Lender` and local loans are all
    /// gone); from now on the count is loans only.
    pub(crate) fn release_owner(&self) -> Released {
        let flags = self.owners_flags();
        assert!(
            flags & ORPHANED == 0 && flags & (CLOSING | REVOKED) != 0,
            "fdlend: owner released its reference of {:?} without closing",
            self.load()
        );
        // Sets ORPHANED and takes the owner's unit in the same add. Release: as for
        // any reference in `release`.
        let delta = flag_delta(flags, ORPHANED).wrapping_sub(UNIT);
        let old = self.word.fetch_add(delta, Ordering::Release);
        self.released(Word(old.wrapping_add(delta)))
    }

    /// Open with only the owner's reference → Dead, in one step. Fails (with what
    /// it saw) while anything else is counted, an attempt in flight included.
    pub(crate) fn retire_if_unlent(&self) -> Result<(), Word> {
        // Relaxed: only LIMITED is read here, which is fixed while the caller holds
        // the owner's reference.
        let limited = self.word.load(Ordering::Relaxed) & LIMITED;
        let owner_only = base(limited) + UNIT + limited + GUARD;
        // Acquire pairs with every reference's Release in `release`: their uses of the
        // fd happen before the owner takes it back.
        self.word
            .compare_exchange(owner_only, DEAD_WORD, Ordering::Acquire, Ordering::Relaxed)
            .map(|_| ())
            .map_err(Word)
    }

    /// Any live word → Revoked: every outstanding reference only counts down from
    /// now on, and pins are refused. The owner still holds its reference (give it
    /// back with `release_owner`).
    pub(crate) fn revoke(&self) {
        let flags = self.owners_flags();
        assert!(
            flags & (ORPHANED | REVOKED | DEAD) == 0,
            "fdlend: revoke of {:?}, which the owner no longer holds",
            self.load()
        );
        // AcqRel: acquire the releases that did happen before the fd is closed, and
        // publish the revocation to pins that read the word afterwards.
        self.word
            .fetch_add(flag_delta(flags, REVOKED), Ordering::AcqRel);
    }

    /// Closing (owner released) → Open, counting the owner's reference again: a
    /// bounded close that ran out of time takes its file back. Refused (with what it
    /// saw) once nothing holds the word or it is dead, and while the owner's
    /// reference is still counted (local loans share it). "Nothing" is the count and
    /// the raw field together, as for the drain's claim.
    ///
    /// Exactly one of this and the drain's claim wins, because both are one
    /// compare-and-swap on the word and each requires what the other destroys: the
    /// claim (`release_last`) swaps a word that nothing holds for the dead word,
    /// while this swaps a held one, `CLOSING | ORPHANED`, for one more count without
    /// them. A release that took the count to zero and lost its claim to a pin in
    /// flight leaves the count above zero again; the reopen may then win, and the
    /// pin, which saw `CLOSING` in its own add, gives its unit back without draining
    /// (the owner's unit is counted again). So there is never a double close, nor a
    /// file both reopened and drained; a reopen refused at zero leaves a claim that
    /// some release in flight is bound to make.
    pub(crate) fn reopen(&self) -> Result<(), Word> {
        // Relaxed: the owner takes back the reference it gave away, and nothing is
        // published or consumed with it. No drain happens for this close, so the
        // loans' releases need not happen before anything (the fd stays open), and
        // the owner's later uses are ordered by its own thread or, for a new close,
        // by its next `release_owner`.
        self.update(Ordering::Relaxed, |current| {
            let word = Word(current);
            // Raw tokens alone (count zero) still hold the file.
            if current & DEAD != 0 || !word.held() || word.counts_owner() {
                return Err(word);
            }
            assert!(
                current & (REVOKED | CLOSING) == CLOSING,
                "fdlend: reopen of {word:?}, which no closing owner left"
            );
            Ok(with_flags(current, current & FLAGS & !(CLOSING | ORPHANED)) + UNIT)
        })
        .map(drop)
    }

    /// One more raw token by a holder of a reference (`lend_raw`, `lend_fd`): one
    /// add on the raw field.
    #[inline]
    pub(crate) fn acquire_held_raw(
        &self,
        admit_below: impl FnOnce() -> u64,
    ) -> Result<(), Refusal> {
        // Relaxed: as in `acquire_held`.
        let old = self.word.fetch_add(RAW_ONE, Ordering::Relaxed);
        // Bit 63 clear: no flag, count under the limit; bit 23 clear: raw tokens
        // under theirs (and the guard not borrowed).
        if old & (1 << 63 | RAW_LIMIT) == 0 {
            return Ok(());
        }
        self.acquire_held_raw_slow(Word(old), admit_below())
    }

    #[cold]
    #[inline(never)]
    fn acquire_held_raw_slow(&self, old: Word, admit_below: u64) -> Result<(), Refusal> {
        // A borrowed guard (a double return's subtraction in flight) reads as `raw()`
        // 0: the token is real and counts, whatever the undo does after it. Giving the
        // add back instead would let a racing double return take a unit that is no
        // token at all.
        let refusal = match old.state() {
            State::Revoked | State::Dead => Refusal::Not(old.state()),
            _ if old.loans() < admit_below - 1 && old.raw() < RAW_LIMIT => return Ok(()),
            _ => Refusal::Saturated,
        };
        // Relaxed: as in `acquire_held_slow` (the caller's reference stays counted).
        self.word.fetch_sub(RAW_ONE, Ordering::Relaxed);
        Err(refusal)
    }

    /// One more raw token by a holder of a reference: the reference becomes the
    /// token's (`Loan::into_raw`), in one add (count - 1, raw + 1). Refused at the
    /// raw limit, and while the guard is borrowed (see `acquire_held_raw_slow`).
    pub(crate) fn mark_raw(&self) -> Result<(), Refusal> {
        // Relaxed: the caller's reference (now a token) keeps the word live; the
        // total of count and raw does not change, so nothing can drain here.
        let old = self
            .word
            .fetch_add(RAW_ONE.wrapping_sub(UNIT), Ordering::Relaxed);
        if Word(old).raw() < RAW_LIMIT {
            return Ok(());
        }
        self.word
            .fetch_add(UNIT.wrapping_sub(RAW_ONE), Ordering::Relaxed);
        Err(Refusal::Saturated)
    }

    /// A raw token becomes a plain reference again (`Loan::from_raw`), if a raw token
    /// is outstanding: one checked add (count + 1, raw - 1), undone if none was (the
    /// undo may be what frees the word: the caller finishes with its `Released`).
    pub(crate) fn unmark_raw(&self) -> Result<(), (Refusal, Released)> {
        // Relaxed: the token's reference stays counted, as a loan now.
        let old = Word(
            self.word
                .fetch_add(UNIT.wrapping_sub(RAW_ONE), Ordering::Relaxed),
        );
        match raw_return(old) {
            Ok(()) => Ok(()),
            // Rare (a token made with `into_raw` given back twice): no retry here.
            Err(refusal) => Err((refusal, self.undo(RAW_ONE.wrapping_sub(UNIT)))),
        }
    }

    /// Gives a raw token back, if one is outstanding: one subtraction on the raw
    /// field, checked afterwards. A return with none outstanding (a double return)
    /// borrows the guard and undoes that at once; it never touches the count, so no
    /// safe loan's or owner's unit is taken, not even for a moment, and the worst a
    /// double return racing other raw returns can do is take another *raw token*'s
    /// unit (that token's own return is then refused `NotLent`).
    ///
    /// On refusal the `Released` says whether the undo freed the word (a release
    /// that raced it found the guard borrowed and left the claim to it): the caller
    /// finishes with it as with any release.
    #[inline]
    pub(crate) fn release_raw(&self) -> Result<Released, (Refusal, Released)> {
        // Release: as in `release`.
        let old = self.word.fetch_sub(RAW_ONE, Ordering::Release);
        // No flag (the owner still counts, so this is not the last) and a token was
        // there: done.
        if fast(old) && old & RAW_FIELD > GUARD {
            return Ok(Released::Kept);
        }
        self.raw_released(Word(old))
    }

    /// A raw return that the fast test could not settle: it took a token (was that
    /// the last reference?), or it found none: then undo, and try again a few times
    /// in case another return's subtraction (since undone) hid this one's token.
    #[cold]
    #[inline(never)]
    fn raw_released(&self, mut old: Word) -> Result<Released, (Refusal, Released)> {
        let mut attempt = 0;
        loop {
            let refusal = match raw_return(old) {
                Err(refusal) => refusal,
                Ok(()) => return Ok(self.released(Word(old.0 - RAW_ONE))),
            };
            let released = self.undo(RAW_ONE);
            // A dead word stays dead for a token of it; an undo that freed the word
            // shows no token was out.
            if attempt == RETURN_RETRIES
                || released != Released::Kept
                || refusal == Refusal::Not(State::Dead)
            {
                return Err((refusal, released));
            }
            crate::sync::spin_loop(attempt);
            attempt += 1;
            // Release: as in `release`.
            old = Word(self.word.fetch_sub(RAW_ONE, Ordering::Release));
        }
    }

    /// Adds back what a refused raw return took out. While it was out the guard was
    /// borrowed, so a release that meanwhile took the count to zero did not claim
    /// the word: if this add leaves the word free, the claim (and the close or
    /// recycling after it) is this thread's.
    fn undo(&self, delta: u64) -> Released {
        // AcqRel: Release as any give-back; Acquire (with the claim's own) so that the
        // releases this add follows in the word's order happen before the close.
        let old = self.word.fetch_add(delta, Ordering::AcqRel);
        self.released(Word(old.wrapping_add(delta)))
    }
}

/// Whether a word seen by a raw return (before its own subtraction) had a raw token
/// outstanding, and if not, why.
fn raw_return(old: Word) -> Result<(), Refusal> {
    if old.0 & DEAD != 0 {
        Err(Refusal::Not(State::Dead))
    } else if old.0 & RAW_FIELD <= GUARD {
        Err(Refusal::NotLent)
    } else {
        Ok(())
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

    /// An open, unlimited word holding `count` references and no raw token.
    fn open_with(count: u64) -> Word {
        Word(FAST_BASE + count * UNIT + GUARD)
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
        assert_eq!(word.load(), open_with(1));
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
        assert_eq!(word.load(), open_with(1));
    }

    #[test]
    fn a_revoked_word_counts_down_to_retired() {
        let word = open();
        word.acquire_held(any).unwrap();
        assert_eq!(word.retire_if_unlent(), Err(open_with(2)));
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
        assert_eq!(word.release_raw(), Err((Refusal::NotLent, Released::Kept)));
        word.acquire_held(any).unwrap();
        word.mark_raw().unwrap();
        assert_eq!(word.load().loans(), 2, "a loan and a raw token");
        assert_eq!(word.release_raw(), Ok(Released::Kept));
        assert_eq!(
            word.release_raw(),
            Err((Refusal::NotLent, Released::Kept)),
            "a double return"
        );
        assert_eq!(
            word.load(),
            open_with(2),
            "the owner and the loan, guard back"
        );
    }

    #[test]
    fn an_over_return_that_a_last_release_raced_drains_in_its_undo() {
        let word = open();
        word.acquire_held(any).unwrap();
        word.begin_close();
        assert_eq!(word.release_owner(), Released::Kept);
        // A double return's subtraction lands first: it borrows the guard...
        let borrowed = word.word.fetch_sub(RAW_ONE, Ordering::Release);
        assert_eq!(Word(borrowed).loans(), 1);
        // ...so the last loan's release, racing it, cannot claim,
        assert_eq!(word.release(), Released::Kept);
        assert_eq!(word.load().loans(), 0, "a borrowed guard reads as no token");
        // and the undo finds the word free and drains it, once.
        assert_eq!(word.undo(RAW_ONE), Released::Drained);
        assert_eq!(word.load().state(), State::Dead);
    }

    #[test]
    fn raw_tokens_count_apart_from_loans_and_drain_last() {
        let word = open();
        word.acquire_held_raw(any).unwrap();
        word.acquire_held_raw(any).unwrap();
        assert_eq!(word.load().count(), 1, "only the owner in the count");
        assert_eq!(word.load().loans(), 2);
        word.begin_close();
        assert_eq!(word.release_owner(), Released::Kept);
        assert_eq!(word.release_raw(), Ok(Released::Kept));
        assert_eq!(word.release_raw(), Ok(Released::Drained));
        assert_eq!(
            word.release_raw(),
            Err((Refusal::Not(State::Dead), Released::Kept))
        );
        assert_eq!(
            word.load(),
            Word(DEAD_WORD),
            "the refused return left no trace"
        );
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
        // A pin in flight keeps the count above zero as the last loan returns: the
        // reopen wins, and the pin's give-back then drains nothing.
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
        assert_eq!(word.load(), open_with(1));
    }

    #[test]
    fn an_unlimited_word_stops_at_max_loans_on_its_fast_path_and_keeps_its_count_through_a_close() {
        let word = open();
        // The owner and MAX_LOANS - 1 loans, stored directly (2^30 adds take seconds).
        word.word
            .store(open_with(MAX_LOANS as u64).0, Ordering::Relaxed);
        word.acquire_held(any).unwrap();
        assert_eq!(word.load().loans(), MAX_LOANS as u64);
        assert_eq!(word.acquire_held(any), Err(Refusal::Saturated));
        let refused = word.try_acquire_new(any).unwrap_err();
        assert_eq!(refused.loans(), MAX_LOANS as u64);
        assert_eq!(word.release(), Released::Kept, "the refused pin gives back");
        assert_eq!(word.load(), open_with(ADMIT_BELOW), "nothing lost");
        word.begin_close();
        assert_eq!(word.load().state(), State::Closing);
        assert_eq!(
            word.load().loans(),
            MAX_LOANS as u64,
            "the base moved, not the count"
        );
        assert_eq!(word.acquire_held(any), Err(Refusal::Saturated));
        assert_eq!(word.release_owner(), Released::Kept);
        assert_eq!(word.load().loans(), MAX_LOANS as u64);
        assert_eq!(word.reopen(), Ok(()));
        assert_eq!(
            word.load(),
            open_with(ADMIT_BELOW),
            "open again, same count"
        );
    }

    #[test]
    fn every_flag_change_keeps_count_and_raw() {
        let word = open_limited();
        word.acquire_held(limit(5)).unwrap();
        word.acquire_held_raw(limit(5)).unwrap();
        let counted = |word: &Liveness| (word.load().count(), word.load().raw());
        assert_eq!(counted(&word), (2, 1));
        word.begin_close();
        assert_eq!(counted(&word), (2, 1));
        assert_eq!(word.release_owner(), Released::Kept);
        assert_eq!(counted(&word), (1, 1), "the owner's unit went");
        assert_eq!(word.reopen(), Ok(()));
        assert_eq!(counted(&word), (2, 1), "and came back");
        assert_eq!(word.load().state(), State::Open);
        word.revoke();
        assert_eq!(counted(&word), (2, 1));
        assert_eq!(word.release_owner(), Released::Kept);
        assert_eq!(word.release(), Released::Kept);
        assert_eq!(word.release_raw(), Ok(Released::Retired));
        assert_eq!(word.load(), Word(DEAD_WORD));
    }

    #[test]
    fn a_raw_token_alone_keeps_the_word_reopenable() {
        let word = open();
        word.acquire_held_raw(any).unwrap();
        word.begin_close();
        assert_eq!(word.release_owner(), Released::Kept);
        assert_eq!(word.load().count(), 0, "only the raw token holds the file");
        assert_eq!(
            word.reopen(),
            Ok(()),
            "not drained: the owner takes it back"
        );
        assert_eq!(word.load().state(), State::Open);
        assert_eq!(word.load().loans(), 1);
        assert_eq!(
            word.release_raw(),
            Ok(Released::Kept),
            "the owner still counts"
        );
    }
}
