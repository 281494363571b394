//! A pin is one `fetch_add` whose unit counts until it is given back, even when the
//! pin is refused. So a refused pin can be the last reference of a closing file (it
//! then finishes the close, exactly once), and a stale pin's unit can land on the
//! record while the same number is registered again (it is carried into the new
//! file's count and given back, never lost, never counted twice).
#![cfg(loom)]

use fdlend::{LendError, Lender};
use fdlend_loom_tests::{model, pipe, variant, Seen};
use loom::thread;

#[test]
fn a_refused_pin_may_be_the_last_reference_and_closes_exactly_once() {
    let seen = Seen::default();
    let noted = seen.clone();
    model(move || {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        let ticket = lender.ticket();
        let loan = lender.loan().unwrap();
        let noted = noted.clone();
        let pinner = thread::spawn(move || match ticket.pin() {
            Ok(pinned) => {
                nix::unistd::write(&pinned, b"p").expect("a pinned loan's fd is open");
                noted.note("pinned");
            }
            Err(error) => {
                let fd = ticket.fd();
                assert!(
                    matches!(error, LendError::Closing { fd: f } | LendError::Closed { fd: f } if f == fd),
                    "refused with {error:?}"
                );
                noted.note(variant(&error));
            }
        });
        let returner = thread::spawn(move || drop(loan));
        let closing = lender.close();
        pinner.join().unwrap();
        returner.join().unwrap();
        assert!(
            matches!(closing.result(), Some(Ok(()))),
            "closed once everything is back, whoever was last"
        );
        let (written, closed) = witness.drain();
        assert!(closed && written.len() <= 1, "{written:?}");
        witness.assert_released();
    });
    seen.assert_exactly(&["pinned", "Closing", "Closed"]);
}

#[test]
fn a_stale_pin_in_flight_across_a_re_registration_is_carried_and_given_back() {
    let seen = Seen::default();
    let noted = seen.clone();
    model(move || {
        let (witness, write) = pipe();
        let old = Lender::new(write).unwrap();
        let ticket = old.ticket();
        let noted = noted.clone();
        let pinner = thread::spawn(move || match ticket.pin() {
            Ok(pinned) => {
                assert_eq!(pinned.epoch(), ticket.epoch(), "only its own file");
                nix::unistd::write(&pinned, b"p").expect("a pinned loan's fd is open");
                noted.note("pinned");
            }
            Err(error) => {
                assert!(
                    matches!(error, LendError::Closed { .. } | LendError::Stale { .. }),
                    "refused with {error:?}"
                );
                noted.note(variant(&error));
            }
        });
        // Take the same fd back and lend it again: same number, same record, a new
        // incarnation; the pin may be in flight across both steps.
        let fd = match old.into_owned_fd() {
            Ok(fd) => fd,
            Err(old) => old.reclaim_wait().expect("no local loans"),
        };
        let new = Lender::new(fd).expect("the old incarnation is gone");
        assert_ne!(new.epoch(), ticket.epoch());
        pinner.join().unwrap();
        assert_eq!(new.outstanding(), 0, "the stale pin's unit was given back");
        assert_eq!(
            ticket.pin().unwrap_err(),
            LendError::Stale { fd: ticket.fd() }
        );
        new.try_close()
            .unwrap_or_else(|lender| panic!("still lent: {lender:?}"))
            .expect("close(2)");
        let (written, closed) = witness.drain();
        assert!(closed && written.len() <= 1, "{written:?}");
        witness.assert_released();
    });
    seen.assert_exactly(&["pinned", "Closed", "Stale"]);
}
