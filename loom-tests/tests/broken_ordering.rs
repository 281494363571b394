//! Proof that the models can see an ordering bug: the crate's
//! `cfg(fdlend_broken_ordering)` build makes the drainer's compare-and-swap Relaxed,
//! so the thread that finishes a close no longer acquires the other loans' releases.
//! Loom must then report the data race below; the normal build must pass.
#![cfg(loom)]

use fdlend::Lender;
use fdlend_loom_tests::{model, pipe};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

#[test]
#[cfg_attr(
    fdlend_broken_ordering,
    should_panic(expected = "Causality violation: Concurrent read and write accesses.")
)]
fn broken_ordering_is_caught() {
    model(|| {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        // What the loan holder did with the file before returning it: the close must
        // come after it, and so must everything the owner does after the close.
        let last_use = Arc::new(UnsafeCell::new(0_u8));
        let loan = lender.loan().unwrap();
        let holder = {
            let last_use = Arc::clone(&last_use);
            thread::spawn(move || {
                nix::unistd::write(&loan, b"h").expect("a loan's fd is open");
                // SAFETY (of the model, not of fdlend): nothing else touches the cell
                // until the owner's close has finished, which needs this loan back.
                last_use.with_mut(|byte| unsafe { *byte = b'h' });
                drop(loan);
            })
        };
        // The owner's local loan keeps the owner's reference counted past `close()`,
        // so when the holder returns first, the owner's own release drains the count
        // and finishes the close itself: the path that must acquire the holder's
        // release. (Without it, `close()` could retire an unlent fd through
        // `retire_if_unlent`, whose Acquire would hide the bug.)
        let local = lender.local_loan();
        let closing = lender.close();
        drop(local);
        closing.wait().expect("close(2) of the lent fd");
        // SAFETY (of the model): the close finished, so the holder's loan is back and
        // its write is over; loom checks exactly that claim.
        let seen = last_use.with(|byte| unsafe { *byte });
        assert_eq!(seen, b'h');
        assert_eq!(witness.drain(), (b"h".to_vec(), true));
        witness.assert_released();
        holder.join().unwrap();
    });
}
