//! Sharded lending (`ShardedLender`/`SharedLoan`): loans counted on per-CPU shards
//! while the owner lends, switched to one atomic count when it starts closing. Under
//! loom each model thread has its own shard (main: shard 0, the first spawned thread:
//! shard 1), so a loan taken on one shard and dropped on another is the normal case
//! here, as it is in a server.
//!
//! Two deliberately broken builds must each fail one model:
//! - `cfg(fdlend_broken_sharded)` makes the switch's swap of each shard Relaxed;
//!   `uses_before_a_sharded_release_happen_before_the_close` must fail with it;
//! - `cfg(fdlend_broken_sharded_release)` weakens the central decrement from AcqRel
//!   to Release; `uses_before_every_central_release_happen_before_the_close` must
//!   fail with it (and with the first one too).
#![cfg(loom)]

use fdlend::{ShardedLender, SharedLoan};
use fdlend_loom_tests::{identity, model, pipe};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use std::fs::File;

/// Writes `byte` through `loan`: fails (and so panics) if the fd was closed under it.
fn write_through(loan: &SharedLoan, byte: &[u8]) {
    nix::unistd::write(loan, byte).expect("a shared loan's fd is open");
}

#[test]
fn a_clone_racing_the_switch_is_counted_once() {
    model(|| {
        let (witness, write) = pipe();
        let sharded = ShardedLender::new(write).unwrap();
        let loan = sharded.loan();
        let holder = thread::spawn(move || {
            // Races the switch: lands on this thread's shard, or on the central count.
            let clone = loan.clone();
            drop(loan);
            write_through(&clone, b"c");
        });

        let closing = sharded.close();
        loom::future::block_on(closing).expect("close(2) of the lent fd");

        assert_eq!(
            witness.drain(),
            (b"c".to_vec(), true),
            "the clone wrote, then the close"
        );
        witness.assert_released();
        // A second close of the number, if any, would now hit this file.
        let canary = File::open("/dev/null").unwrap();
        let canary_id = identity(&canary);
        holder.join().unwrap();
        assert_eq!(
            identity(&canary),
            canary_id,
            "something closed the number again"
        );
    });
}

#[test]
fn the_last_return_after_the_switch_closes_exactly_once() {
    model(|| {
        let (witness, write) = pipe();
        let sharded = ShardedLender::new(write).unwrap();
        // Both counted on the owner's shard; returned on the holders' shards (1 and 0),
        // before, during or after the switch.
        let holders = [b"a", b"b"].map(|byte| {
            let loan = sharded.loan();
            thread::spawn(move || {
                write_through(&loan, byte);
            })
        });
        // Deferred close: whoever drops the last shared loan ends the family, whose
        // core loan is then the last one, and closes.
        drop(sharded);
        for holder in holders {
            holder.join().unwrap();
        }
        assert_eq!(
            witness.drain_sorted(),
            (b"ab".to_vec(), true),
            "both wrote, then the close"
        );
        witness.assert_released();
    });
}

#[test]
fn reclaim_after_the_switch_wakes_once_the_last_shard_loan_is_back() {
    model(|| {
        let (witness, write) = pipe();
        let sharded = ShardedLender::new(write).unwrap();
        let loan = sharded.loan();
        let holder = thread::spawn(move || {
            let clone = loan.clone();
            write_through(&loan, b"r");
            drop(loan);
            drop(clone);
        });
        // As a future, so a lost wake from whoever ends the family (and with it the
        // core loan) would be a loom deadlock.
        let fd = loom::future::block_on(sharded.into_lender().reclaim());
        assert_eq!(
            witness.drain(),
            (b"r".to_vec(), false),
            "back, unclosed: ours now"
        );
        holder.join().unwrap();
        drop(fd);
        assert_eq!(witness.drain(), (Vec::new(), true));
    });
}

#[test]
#[cfg_attr(
    fdlend_broken_sharded,
    should_panic(expected = "Causality violation: Concurrent read and write accesses.")
)]
fn uses_before_a_sharded_release_happen_before_the_close() {
    model(|| {
        let (witness, write) = pipe();
        let sharded = ShardedLender::new(write).unwrap();
        // What the holder did with the file before returning its loan: the close, and
        // everything the owner does after it, must come after.
        let last_use = Arc::new(UnsafeCell::new(0_u8));
        let loan = sharded.loan();
        let holder = {
            let last_use = Arc::clone(&last_use);
            thread::spawn(move || {
                write_through(&loan, b"h");
                // SAFETY (of the model, not of fdlend): nothing else touches the cell
                // until the owner's close has finished, which needs this loan back.
                last_use.with_mut(|byte| unsafe { *byte = b'h' });
                // Usually a shard-mode release (only the switch's swap can acquire it).
                drop(loan);
            })
        };
        sharded.close_wait().expect("close(2) of the lent fd");
        // SAFETY (of the model): the close finished, so the holder's loan is back and
        // its write is over; loom checks exactly that claim.
        let seen = last_use.with(|byte| unsafe { *byte });
        assert_eq!(seen, b'h');
        assert_eq!(witness.drain(), (b"h".to_vec(), true));
        witness.assert_released();
        holder.join().unwrap();
    });
}

/// The decrement that takes the central count to zero must acquire every earlier
/// decrement: the owner returns its own loan after the switch, and when the holder's
/// loan went back to the central count first, the owner's decrement ends the family
/// (and so the close) on the owner's thread, which must then see the holder's uses.
/// (With one holder and no loan of the owner's, the last central decrement is always
/// the holder's own, whose uses come before it in program order: that model cannot
/// see this ordering.) When the holder returns before the switch instead, the fold
/// carries its release to the central count, so a Relaxed kill swap
/// (`fdlend_broken_sharded`) fails this model too.
#[test]
#[cfg_attr(
    any(fdlend_broken_sharded_release, fdlend_broken_sharded),
    should_panic(expected = "Causality violation: Concurrent read and write accesses.")
)]
fn uses_before_every_central_release_happen_before_the_close() {
    model(|| {
        let (witness, write) = pipe();
        let sharded = ShardedLender::new(write).unwrap();
        let last_use = Arc::new(UnsafeCell::new(0_u8));
        let loan = sharded.loan();
        let own = sharded.loan();
        let holder = {
            let last_use = Arc::clone(&last_use);
            thread::spawn(move || {
                write_through(&loan, b"h");
                // SAFETY (of the model, not of fdlend): nothing else touches the cell
                // until the owner's close has finished, which needs this loan back.
                last_use.with_mut(|byte| unsafe { *byte = b'h' });
                // A shard-mode release before the switch, a central one after it.
                drop(loan);
            })
        };
        let lender = sharded.into_lender();
        // After the switch: a central decrement, the last one if the holder's came
        // first.
        drop(own);
        lender.close_wait().expect("close(2) of the lent fd");
        // SAFETY (of the model): the close finished, so the holder's loan is back and
        // its write is over; loom checks exactly that claim.
        let seen = last_use.with(|byte| unsafe { *byte });
        assert_eq!(seen, b'h');
        assert_eq!(witness.drain(), (b"h".to_vec(), true));
        witness.assert_released();
        holder.join().unwrap();
    });
}
