//! Deferred close (`close()` and drop): whatever order the loans come back in, the
//! fd is closed once, after the last of them, and `Closing` reports that close.
#![cfg(loom)]

use fdlend::Lender;
use fdlend_loom_tests::{identity, model, pipe};
use loom::thread;
use std::fs::File;

#[test]
fn close_happens_exactly_once() {
    model(|| {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        let writers = [b"a", b"b"].map(|byte| {
            let loan = lender.loan().unwrap();
            thread::spawn(move || {
                nix::unistd::write(&loan, byte).expect("a loan's fd is open");
            })
        });

        let closing = lender.close();
        let early = closing.result();
        assert!(early.as_ref().is_none_or(Result::is_ok), "{early:?}");
        // As a future, so a lost wake from the last loan would be a loom deadlock.
        loom::future::block_on(closing).expect("close(2) of the lent fd");

        assert_eq!(
            witness.drain_sorted(),
            (b"ab".to_vec(), true),
            "both loans wrote, then the close"
        );
        witness.assert_released();
        // A second close of the number, if any, would now hit this file.
        let canary = File::open("/dev/null").unwrap();
        let canary_id = identity(&canary);
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(
            identity(&canary),
            canary_id,
            "something closed the number again"
        );
    });
}

#[test]
fn dropped_lender_closes_exactly_once_after_the_last_loan() {
    model(|| {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        let loan = lender.loan().unwrap();
        let clone = loan.clone();
        let writers = [(loan, b"a"), (clone, b"b")].map(|(loan, byte)| {
            thread::spawn(move || {
                nix::unistd::write(&loan, byte).expect("a loan's fd is open");
            })
        });
        drop(lender);
        for writer in writers {
            writer.join().unwrap();
        }
        assert_eq!(
            witness.drain_sorted(),
            (b"ab".to_vec(), true),
            "every loan is back: closed"
        );
        witness.assert_released();
    });
}
