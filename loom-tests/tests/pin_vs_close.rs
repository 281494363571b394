//! A ticket pinned on another thread while the owner closes: the pin is refused with
//! a typed error, or it wins and the close waits for its loan. Never a loan of a
//! closed fd.
#![cfg(loom)]

use fdlend::{LendError, Lender};
use fdlend_loom_tests::{model, pipe, variant, Seen};
use loom::thread;

#[test]
fn pin_racing_close_is_refused_or_waited_for() {
    let seen = Seen::default();
    let noted = seen.clone();
    model(move || {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        let ticket = lender.ticket();
        let pinners = [b"a", b"b"].map(|byte| {
            let noted = noted.clone();
            thread::spawn(move || match ticket.pin() {
                Ok(loan) => {
                    // EBADF here would be a use after close.
                    nix::unistd::write(&loan, byte).expect("a pinned loan's fd is open");
                    noted.note("pinned");
                    Some(byte[0])
                }
                Err(error) => {
                    let fd = ticket.fd();
                    assert!(
                        matches!(error, LendError::Closing { fd: f } | LendError::Closed { fd: f } if f == fd),
                        "pin refused with {error:?}"
                    );
                    noted.note(variant(&error));
                    None
                }
            })
        });

        lender.close().wait().expect("close(2) of the lent fd");
        let written = witness.drain_sorted();
        let pinned: Vec<u8> = pinners
            .into_iter()
            .filter_map(|pinner| pinner.join().unwrap())
            .collect();
        // Every winning pin wrote before the close; the close came after all of them.
        assert_eq!(written, (pinned, true));
        witness.assert_released();
        assert_eq!(
            ticket.pin().unwrap_err(),
            LendError::Closed { fd: ticket.fd() }
        );
    });
    seen.assert_exactly(&["pinned", "Closing", "Closed"]);
}
