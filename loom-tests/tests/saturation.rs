//! A loan limit under contention: it is never exceeded, refusals are typed and cost
//! nothing, and a slot freed by a return is taken by at most one pin.
#![cfg(loom)]

use fdlend::{LendError, Lender};
use fdlend_loom_tests::{model, pipe, Seen};
use loom::thread;

#[test]
fn saturation_admits_exactly_one() {
    model(|| {
        let (witness, write) = pipe();
        let lender = Lender::with_max_loans(write, 1).unwrap();
        let ticket = lender.ticket();
        // Each pin's loan travels back through `join`, so both pins happen while the
        // other's loan (if any) is still held.
        let pinners = [0, 1].map(|_| thread::spawn(move || ticket.pin()));
        let mut results = pinners.map(|pinner| pinner.join().unwrap());
        results.sort_by_key(Result::is_err);
        let [Ok(won), Err(lost)] = results else {
            panic!("not exactly one winner: {results:?}");
        };
        let fd = ticket.fd();
        assert_eq!(lost, LendError::Saturated { fd, limit: 1 });
        assert_eq!(lender.outstanding(), 1, "the refused pin counted something");
        assert_eq!(
            lender.loan().unwrap_err(),
            LendError::Saturated { fd, limit: 1 }
        );
        nix::unistd::write(&won, b"w").expect("the winner's fd is open");
        drop(won);
        assert_eq!(lender.outstanding(), 0);
        let result = lender
            .try_close()
            .unwrap_or_else(|lender| panic!("still lent: {lender:?}"));
        result.expect("close(2)");
        assert_eq!(witness.drain(), (b"w".to_vec(), true));
    });
}

#[test]
fn a_returned_loan_frees_its_place_for_one_pin() {
    let seen = Seen::default();
    let noted = seen.clone();
    model(move || {
        let (witness, write) = pipe();
        let lender = Lender::with_max_loans(write, 1).unwrap();
        let ticket = lender.ticket();
        let loan = lender.loan().unwrap();
        let returner = thread::spawn(move || drop(loan));
        let pinner = thread::spawn(move || ticket.pin());
        returner.join().unwrap();
        match pinner.join().unwrap() {
            Ok(loan) => {
                noted.note("pinned after the return");
                assert_eq!(lender.outstanding(), 1);
                assert!(lender.loan().is_err(), "the limit is 1");
                drop(loan);
            }
            Err(error) => {
                noted.note("saturated before the return");
                assert_eq!(
                    error,
                    LendError::Saturated {
                        fd: ticket.fd(),
                        limit: 1
                    }
                );
            }
        }
        assert_eq!(
            lender.outstanding(),
            0,
            "a loan or a refusal leaked a count"
        );
        lender
            .try_close()
            .unwrap_or_else(|lender| panic!("still lent: {lender:?}"))
            .expect("close(2)");
        assert_eq!(witness.drain(), (Vec::new(), true));
    });
    seen.assert_exactly(&["pinned after the return", "saturated before the return"]);
}
