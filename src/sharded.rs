//! Sharded lending for a hot file: many threads cloning and dropping loans of one fd
//! at once, without all of them fighting over one cache line.
//!
//! The design is the Linux kernel's `percpu_ref`. While the owner is lending, a
//! [`SharedLoan`]'s clone or drop is one atomic add on a cache-padded counter picked
//! by the CPU it runs on (a *shard*): no two CPUs write the same line. The shards'
//! values mean nothing alone (a loan cloned on one CPU may be dropped on another);
//! only their sum does. When the owner starts closing, [`ShardedLender::into_lender`]
//! *switches* the family to one atomic count:
//!
//! 1. each shard is swapped to a `KILLED` marker, which atomically captures its value
//!    and sends every later operation on it to the central count instead;
//! 2. the captured values are added to the central count in one step, which also
//!    removes `BIAS` and the owner's own reference.
//!
//! `BIAS` (2^62) sits in the central count for as long as the shards are live, so
//! releases that reach the central count during the switch, before step 2, can never
//! take it to zero early; after step 2 it holds the exact number of shared loans, and
//! whichever operation takes it to zero (a loan's drop, or the switch itself) is the
//! one that ends the family. No RCU is needed: the swap is the linearisation point
//! of each shard.
//!
//! The whole family holds a single counted reference in the core liveness word (a
//! plain [`Loan`]), dropped when the family ends. So the fd's epoch, tickets and every
//! close mode are the core's: the core just sees one loan outstanding until the last
//! shared loan is gone, and closes exactly once, as always.

use crate::error::{LendError, RegisterError};
use crate::fd;
use crate::lender::Lender;
use crate::loan::{Epoch, Loan, Ticket};
use crate::sync::{AtomicU64, Ordering};
use crate::Closing;
use std::fmt;
use std::fs::File;
use std::io;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::ptr::NonNull;

/// Keeps the central count above zero while the shards are live (see the module docs).
/// Releases reaching the central count early are bounded by the shared loans that
/// exist, far fewer than 2^62.
const BIAS: u64 = 1 << 62;

/// A live shard's value with nothing counted on it. Live shards drift around it (a
/// clone on one CPU, its drop on another) and killed shards around [`KILLED`], so
/// the sign tells them apart: the check after a clone's or a drop's one `lock`
/// instruction is a test of its flags, as `Arc`'s is. Either would need 2^61
/// unbalanced operations (decades at a billion a second) to cross zero.
const LIVE: u64 = 1 << 61;

/// A killed shard's value: negative. Every operation on it after the kill still adds
/// ±1 to it before going to the central count.
const KILLED: u64 = (i64::MIN / 2) as u64;

/// True for a killed shard's value (see [`LIVE`]).
#[inline]
fn is_killed(value: u64) -> bool {
    (value as i64) < 0
}

/// One counter on a cache line (two, for the adjacent-line prefetcher) of its own.
#[repr(align(128))]
struct Padded(AtomicU64);

/// What every handle of one sharded file points at. Freed by whoever ends the count.
struct Family {
    /// `BIAS` + the owner + loans counted here (while live); the exact count after the
    /// switch.
    central: Padded,
    shards: Box<[Padded]>,
    fd: RawFd,
    /// The family's one reference in the core liveness word.
    core: ManuallyDrop<Loan>,
}

impl Family {
    /// The shard for `hint` (any number: masked to the shard count).
    #[inline]
    fn shard_at(&self, hint: usize) -> &AtomicU64 {
        let index = hint & (self.shards.len() - 1);
        // SAFETY: `shards.len()` is a power of two (`shard_count`), so the mask keeps
        // `index` below it.
        unsafe { &self.shards.get_unchecked(index).0 }
    }

    /// One more reference; the caller holds one already (`Arc::clone`'s rule), so the
    /// family cannot end meanwhile. Where the CPU number is not a plain read, out of
    /// line: the hot path then calls nothing and saves no register before its add.
    #[inline]
    fn acquire(&self) {
        match quick_hint() {
            Some(hint) => self.acquire_at(hint),
            None => self.acquire_slow(),
        }
    }

    #[cold]
    #[inline(never)]
    fn acquire_slow(&self) {
        self.acquire_at(shard_hint());
    }

    #[inline]
    fn acquire_at(&self, hint: usize) {
        let shard = self.shard_at(hint);
        // Relaxed, as `Arc::clone`: the caller's reference already keeps the fd open,
        // and the kill's swap sees this add or sends it to the central count (the
        // atomicity of the add is what matters, not its ordering). No load first: it
        // would cost a second access per clone to spare a killed shard a drift it
        // can take (see `KILLED`).
        if !is_killed(shard.fetch_add(1, Ordering::Relaxed)) {
            return;
        }
        // The add landed on a killed shard: count centrally.
        // Relaxed, as above.
        self.central.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Gives back one reference of `family`, ending the family if it was the last.
///
/// # Safety
/// - The caller gives up one counted reference of `family` and does not use `family`
///   afterwards.
#[inline]
unsafe fn release(family: NonNull<Family>) {
    match quick_hint() {
        // SAFETY: the caller's contract, passed on.
        Some(hint) => unsafe { release_at(family, hint) },
        // SAFETY: as above.
        None => unsafe { release_slow(family) },
    }
}

/// `release` where the CPU number is not a plain read, out of line (see `acquire`).
///
/// # Safety
/// - As for `release`.
#[cold]
#[inline(never)]
unsafe fn release_slow(family: NonNull<Family>) {
    // SAFETY: the caller's contract, passed on.
    unsafe { release_at(family, shard_hint()) }
}

/// `release` on the shard for `hint`.
///
/// # Safety
/// - As for `release`.
#[inline]
unsafe fn release_at(family: NonNull<Family>, hint: usize) {
    // SAFETY: the caller's reference keeps the family alive until it is given back,
    // which is the last access below on every path.
    let shared = unsafe { family.as_ref() };
    let shard = shared.shard_at(hint);
    // Release pairs with the kill's Acquire swap of this shard: uses of the fd through
    // this reference happen before whoever ends the family (and so before the close).
    // (`< 1` rather than `< 0` on the value before: the same verdict on every
    // value a shard can hold, and it is the sign of the value after, a flag test.)
    if (shard.fetch_sub(1, Ordering::Release) as i64) >= 1 {
        return;
    }
    // AcqRel: Release for this reference's uses, as above; Acquire if this is the last
    // one, pairing with every other decrement and with the switch's fold.
    if shared.central.0.fetch_sub(1, CENTRAL_RELEASE_ORDERING) == 1 {
        // SAFETY: the central count reached zero after the switch (before it, `BIAS`
        // keeps it positive): no reference is left, and only the operation that
        // reached zero gets here.
        unsafe { end(family) };
    }
}

/// Switches `family` to the central count and gives back the owner's reference.
///
/// # Safety
/// - Called once per family, by its owner, who gives up its reference here.
unsafe fn switch_to_central(family: NonNull<Family>) {
    // SAFETY: the owner's reference keeps the family alive until the fold below.
    let shared = unsafe { family.as_ref() };
    let mut sum = 0u64;
    for shard in shared.shards.iter() {
        // Acquire pairs with the Release of every shard-mode release on this shard
        // (all writes to a shard are read-modify-writes, so they form one release
        // sequence): their uses of the fd happen before the fold below publishes it.
        sum = sum
            .wrapping_add(shard.0.swap(KILLED, KILL_ORDERING))
            .wrapping_sub(LIVE);
    }
    let delta = sum.wrapping_sub(BIAS).wrapping_sub(1);
    // AcqRel: Release hands what the swaps acquired to whoever ends the family;
    // Acquire pairs with the central decrements already done, in case that is us.
    let before = shared.central.0.fetch_add(delta, Ordering::AcqRel);
    if before.wrapping_add(delta) == 0 {
        // SAFETY: zero after the fold means no shared loan is left.
        unsafe { end(family) };
    }
}

/// Frees the family and gives its core reference back (which closes the fd if the
/// owner has begun closing and nothing else is lent).
///
/// # Safety
/// - The family's count has reached zero after the switch, and this is the one call
///   that observed it.
unsafe fn end(family: NonNull<Family>) {
    // SAFETY: allocated by `Box::new` in `ShardedLender::from_lender`; the caller's
    // contract makes this the only access left.
    let mut family = unsafe { Box::from_raw(family.as_ptr()) };
    // SAFETY: taken once, here, and the family is freed right after without dropping it.
    let core = unsafe { ManuallyDrop::take(&mut family.core) };
    drop(family);
    drop(core);
}

#[cfg(not(fdlend_broken_sharded))]
const KILL_ORDERING: Ordering = Ordering::Acquire;
/// The deliberately broken build: the switch does not acquire the shard-mode
/// releases, so a loan's last use of the fd is not ordered before the close. The loom
/// model `uses_before_a_sharded_release_happen_before_the_close` must fail with it.
#[cfg(fdlend_broken_sharded)]
const KILL_ORDERING: Ordering = Ordering::Relaxed;

#[cfg(not(fdlend_broken_sharded_release))]
const CENTRAL_RELEASE_ORDERING: Ordering = Ordering::AcqRel;
/// The deliberately broken build: the decrement that ends the family does not acquire
/// the other decrements (nor the fold), so another loan's last use of the fd is not
/// ordered before the close. The loom model
/// `uses_before_every_central_release_happen_before_the_close` must fail with it, and
/// so must the integration test
/// `shared_loans_dropped_at_once_after_the_switch_close_after_all_their_uses` under
/// Miri and ThreadSanitizer.
#[cfg(fdlend_broken_sharded_release)]
const CENTRAL_RELEASE_ORDERING: Ordering = Ordering::Release;

/// The CPU this thread runs on (see `cpu.rs`: the rseq area, else `sched_getcpu`).
#[cfg(not(any(loom, miri)))]
#[inline]
fn shard_hint() -> usize {
    crate::cpu::current()
}

/// The shard hint if it is one plain read (the rseq area), else `None`.
#[cfg(not(any(loom, miri)))]
#[inline]
fn quick_hint() -> Option<usize> {
    crate::cpu::rseq_current()
}

/// Under loom and Miri every hint is quick (see `shard_hint` below).
#[cfg(any(loom, miri))]
fn quick_hint() -> Option<usize> {
    Some(shard_hint())
}

/// Miri cannot call `sched_getcpu` (a foreign function): each thread gets the next
/// number of a global tally the first time it asks, so threads started one after
/// another land on different shards, and a loan cloned on one thread and dropped on
/// another crosses shards, as it does between CPUs.
#[cfg(all(miri, not(loom)))]
fn shard_hint() -> usize {
    use std::sync::atomic::AtomicUsize;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        // Relaxed: any distinct numbers will do; nothing else is published with them.
        static HINT: usize = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    HINT.with(|hint| *hint)
}

/// Loom has no CPUs: each model thread gets the shard of its thread number, so a
/// model's threads land on different shards deterministically.
#[cfg(loom)]
fn shard_hint() -> usize {
    let id = format!("{:?}", loom::thread::current().id());
    id.trim_start_matches("ThreadId(")
        .trim_end_matches(')')
        .parse()
        .unwrap_or(0)
}

#[cfg(not(loom))]
fn shard_count() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |cpus| cpus.get())
        .next_power_of_two()
        .clamp(2, 64)
}

#[cfg(loom)]
fn shard_count() -> usize {
    2
}

/// The owner of a hot fd lent in sharded mode: [`SharedLoan`]s from it clone and drop
/// on per-CPU counters, so threads sharing the file do not contend. Opt in for the few
/// files that many threads use at once; everything else should use [`Lender`] (whose
/// `Loan` is 8 bytes with no allocation of its own; a sharded lender allocates one
/// 128-byte line per shard).
///
/// It wraps a core [`Lender`] ([`lender`](ShardedLender::lender) gives its loans,
/// tickets and local loans). Closing goes through [`into_lender`](ShardedLender::into_lender),
/// which switches the shared loans to a single atomic count and hands back the core
/// lender with every close mode; dropping it is a deferred close.
pub struct ShardedLender {
    /// `None` only between `into_lender` taking it and `Drop` running.
    lender: Option<Lender>,
    /// The owner's reference of the family (counted in `central`).
    family: NonNull<Family>,
}

impl ShardedLender {
    /// Takes ownership of `fd` and lends it in sharded mode (refused as
    /// [`Lender::new`] refuses).
    pub fn new(fd: OwnedFd) -> Result<ShardedLender, RegisterError> {
        let lender = Lender::new(fd)?;
        Ok(ShardedLender::from_lender(lender).expect("a fresh lender has room for one loan"))
    }

    /// Lends `lender`'s fd in sharded mode. The shared loans together take one loan
    /// of `lender`; refused (`Saturated`) only if it has none left. On refusal the
    /// lender is dropped, which is a deferred close.
    pub fn from_lender(lender: Lender) -> Result<ShardedLender, LendError> {
        let core = lender.loan()?;
        let family = Box::new(Family {
            central: Padded(AtomicU64::new(BIAS + 1)),
            shards: (0..shard_count())
                .map(|_| Padded(AtomicU64::new(LIVE)))
                .collect(),
            fd: core.as_raw_fd(),
            core: ManuallyDrop::new(core),
        });
        Ok(ShardedLender {
            lender: Some(lender),
            family: NonNull::from(Box::leak(family)),
        })
    }

    fn family(&self) -> &Family {
        // SAFETY: the owner's reference keeps the family alive while `self` lives
        // (it is given back only by `into_lender`/`Drop`, which consume it).
        unsafe { self.family.as_ref() }
    }

    /// A shared loan for any thread: one uncontended atomic add on this CPU's shard.
    /// Never refused (the count is 64-bit, like `Arc`'s).
    #[inline]
    pub fn loan(&self) -> SharedLoan {
        self.family().acquire();
        SharedLoan {
            family: self.family,
        }
    }

    /// The core lender: its plain loans, tickets and local loans share the fd (the
    /// whole sharded family counts as one of its loans).
    pub fn lender(&self) -> &Lender {
        self.lender
            .as_ref()
            .expect("fdlend: ShardedLender used after it was consumed")
    }

    /// Shared loans outstanding: a snapshot, exact only when no other thread is
    /// cloning or dropping them.
    pub fn outstanding(&self) -> usize {
        let family = self.family();
        // Relaxed: a diagnostic sum of counters other threads may be changing.
        let shards = family.shards.iter().fold(0u64, |sum, shard| {
            sum.wrapping_add(shard.0.load(Ordering::Relaxed).wrapping_sub(LIVE))
        });
        let central = family.central.0.load(Ordering::Relaxed);
        central.wrapping_add(shards).wrapping_sub(BIAS + 1) as usize
    }

    /// The switch: shared loans from now on count on one atomic word (they keep
    /// working, clones included), and the core lender comes back with every close
    /// mode. The family holds one core loan until its last shared loan is dropped,
    /// so a `close_wait` on the result waits for them too.
    pub fn into_lender(mut self) -> Lender {
        let lender = self
            .lender
            .take()
            .expect("fdlend: ShardedLender consumed twice");
        // SAFETY: once per family (`lender` is now `None`, so `Drop` will not), by the
        // owner, whose reference ends here.
        unsafe { switch_to_central(self.family) };
        lender
    }

    /// Deferred close: [`into_lender`](ShardedLender::into_lender) then
    /// [`Lender::close`].
    pub fn close(self) -> Closing {
        self.into_lender().close()
    }

    /// Blocking close: [`into_lender`](ShardedLender::into_lender) then
    /// [`Lender::close_wait`].
    pub fn close_wait(self) -> io::Result<()> {
        self.into_lender().close_wait()
    }
}

impl Drop for ShardedLender {
    fn drop(&mut self) {
        if let Some(lender) = self.lender.take() {
            // SAFETY: as in `into_lender`: the lender was still here, so this is the
            // family's one switch and the owner's last use of its reference.
            unsafe { switch_to_central(self.family) };
            drop(lender);
        }
    }
}

impl TryFrom<OwnedFd> for ShardedLender {
    type Error = RegisterError;

    fn try_from(fd: OwnedFd) -> Result<ShardedLender, RegisterError> {
        ShardedLender::new(fd)
    }
}

impl TryFrom<File> for ShardedLender {
    type Error = RegisterError;

    fn try_from(file: File) -> Result<ShardedLender, RegisterError> {
        ShardedLender::new(file.into())
    }
}

impl AsFd for ShardedLender {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.lender().as_fd()
    }
}

impl AsRawFd for ShardedLender {
    fn as_raw_fd(&self) -> RawFd {
        self.family().fd
    }
}

impl fmt::Debug for ShardedLender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedLender")
            .field("fd", &self.family().fd)
            .field("shards", &self.family().shards.len())
            .field("outstanding", &self.outstanding())
            .finish()
    }
}

/// A loan of a [`ShardedLender`]'s fd: `Send + Sync + Clone`, 8 bytes; keeps the fd
/// open until the last one drops. While the owner lends, clone and drop touch only
/// the current CPU's counter; after the switch they touch one shared atomic, as `Arc`.
pub struct SharedLoan {
    family: NonNull<Family>,
}

// SAFETY: a `SharedLoan` is a counted pointer to a `Family`, which is only ever
// touched through atomics or read-only fields (`shards`, `fd`, and the core `Loan`,
// itself `Send + Sync`) until the single `end`; the count makes it outlive every
// handle, wherever the handles are.
unsafe impl Send for SharedLoan {}
// SAFETY: as for `Send`: `&SharedLoan` allows only atomic operations and reads.
unsafe impl Sync for SharedLoan {}

impl SharedLoan {
    fn family(&self) -> &Family {
        // SAFETY: this loan's count keeps the family alive while `self` lives.
        unsafe { self.family.as_ref() }
    }

    /// A plain core [`Loan`] of the same file, for APIs that take one (one atomic
    /// operation on the fd's liveness word). Works while the file is closing too.
    pub fn to_loan(&self) -> Result<Loan, LendError> {
        self.family().core.try_clone()
    }

    /// A ticket for the same file.
    pub fn ticket(&self) -> Ticket {
        self.family().core.ticket()
    }

    /// The incarnation of the file this loan keeps open.
    pub fn epoch(&self) -> Epoch {
        self.family().core.epoch()
    }
}

impl Clone for SharedLoan {
    #[inline]
    fn clone(&self) -> SharedLoan {
        self.family().acquire();
        SharedLoan {
            family: self.family,
        }
    }
}

impl Drop for SharedLoan {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this loan's reference is given back here, once, and `self` is not
        // used afterwards.
        unsafe { release(self.family) };
    }
}

impl AsFd for SharedLoan {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: this loan's count keeps the family, and so its core loan, alive;
        // the core loan keeps `fd` open (the owner's unsafe `close_now` aside, whose
        // contract covers every loan).
        unsafe { fd::borrow(self.family().fd) }
    }
}

impl AsRawFd for SharedLoan {
    fn as_raw_fd(&self) -> RawFd {
        self.family().fd
    }
}

impl fmt::Debug for SharedLoan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedLoan")
            .field("fd", &self.family().fd)
            .field("epoch", &self.epoch())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn killed_and_live_values_never_meet() {
        assert!(is_killed(KILLED));
        assert!(is_killed(KILLED.wrapping_add(1 << 60)));
        assert!(is_killed(KILLED.wrapping_sub(1 << 60)));
        assert!(!is_killed(LIVE));
        assert!(!is_killed(LIVE - 1), "a shard one below its start is live");
        assert!(!is_killed(LIVE + (1 << 60)));
        assert!(!is_killed(LIVE - (1 << 60)));
    }
}

static_assertions::assert_impl_all!(SharedLoan: Send, Sync, Clone, AsFd);
static_assertions::assert_not_impl_any!(ShardedLender: Send, Sync);
static_assertions::const_assert_eq!(std::mem::size_of::<SharedLoan>(), 8);
