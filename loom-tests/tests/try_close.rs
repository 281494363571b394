//! `try_close` racing the last loan's return: it closes only a file with nothing
//! lent, and when it does, the returned loan's last use happened before the close.
#![cfg(loom)]

use fdlend::Lender;
use fdlend_loom_tests::{model, pipe, Seen};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

#[test]
fn try_close_closes_only_when_unlent() {
    let seen = Seen::default();
    let noted = seen.clone();
    model(move || {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        let last_use = Arc::new(UnsafeCell::new(0_u8));
        let loan = lender.loan().unwrap();
        let holder = {
            let last_use = Arc::clone(&last_use);
            thread::spawn(move || {
                nix::unistd::write(&loan, b"h").expect("a loan's fd is open");
                // SAFETY (of the model): the owner reads the cell only once it has
                // taken the fd back, which needs this loan returned.
                last_use.with_mut(|byte| unsafe { *byte = b'h' });
                drop(loan);
            })
        };
        match lender.try_close() {
            Ok(result) => {
                noted.note("closed");
                result.expect("close(2) of an unlent fd");
                assert_eq!(
                    witness.drain(),
                    (b"h".to_vec(), true),
                    "the loan wrote, then the close"
                );
                // SAFETY (of the model): the loan is back, so its write is over; loom
                // checks that `retire_if_unlent` really ordered it before us.
                assert_eq!(last_use.with(|byte| unsafe { *byte }), b'h');
            }
            Err(lender) => {
                noted.note("still lent");
                assert!(
                    lender.outstanding() <= 1,
                    "one loan at most, maybe back by now"
                );
                drop(lender);
            }
        }
        holder.join().unwrap();
        assert!(
            witness.drain().1,
            "closed once the loan is back, either way"
        );
        witness.assert_released();
    });
    seen.assert_exactly(&["closed", "still lent"]);
}
