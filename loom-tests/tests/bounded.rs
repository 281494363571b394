//! Bounded waits: the owner stops waiting (a time-out) while the last loan is being
//! returned. Exactly one of the two wins in every interleaving: either the close
//! happens, once, after the loan's last use, or the lender comes back intact, lending
//! again with its count right, and a later close closes once. Never a double close,
//! never a lost wake (a waiter left blocked is a loom deadlock), never a leak (`model`
//! counts the process's fds).
#![cfg(loom)]

use fdlend::{Lender, Loan};
use fdlend_loom_tests::{model, pipe, Seen, Witness};
use loom::thread;
use std::time::Duration;

/// What the owner's stop-waiting step did.
enum Stopped {
    Closed,
    HandedBack(Lender),
}

/// One loan writes `l` and returns on another thread (and, with `pin`, a ticket is
/// pinned on a third, a reference in flight that may hold the count up across the
/// last return) while the owner begins a close and stops waiting with `stop`.
fn revert_races_the_last_release(pin: bool, stop: fn(Lender) -> Stopped) {
    let seen = Seen::default();
    let noted = seen.clone();
    model(move || {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        let loan: Loan = lender.loan().unwrap();
        let returner = thread::spawn(move || {
            nix::unistd::write(&loan, b"l").expect("a loan's fd is open");
        });
        let ticket = lender.ticket();
        let pinner = pin.then(|| {
            thread::spawn(move || {
                if let Ok(pinned) = ticket.pin() {
                    nix::unistd::write(&pinned, b"p").expect("a pin's fd is open");
                }
            })
        });
        match stop(lender) {
            Stopped::Closed => {
                noted.note("closed");
                assert_closed_after_every_use(&witness, false);
            }
            Stopped::HandedBack(lender) => {
                noted.note("handed back");
                // Intact: it lends, and its count is exact once the others are done.
                let mine = lender.loan().expect("lending again");
                nix::unistd::write(&mine, b"o").expect("the handed-back fd is open");
                drop(mine);
                returner.join().unwrap();
                if let Some(pinner) = pinner {
                    pinner.join().unwrap();
                }
                assert_eq!(lender.outstanding(), 0, "the count after the race");
                lender.close_wait().expect("close(2) of the handed-back fd");
                assert_closed_after_every_use(&witness, true);
                return;
            }
        }
        returner.join().unwrap();
        if let Some(pinner) = pinner {
            pinner.join().unwrap();
        }
    });
    seen.assert_exactly(&["closed", "handed back"]);
}

/// The write end is closed, after the loan's byte (and the owner's, if `owner`
/// wrote); a pin that got in wrote its byte before too.
fn assert_closed_after_every_use(witness: &Witness, owner: bool) {
    let (bytes, closed) = witness.drain_sorted();
    assert!(closed, "the close happened");
    let mut expected = b"l".to_vec();
    if owner {
        expected.push(b'o');
    }
    let without_pin: Vec<u8> = bytes.iter().copied().filter(|&b| b != b'p').collect();
    expected.sort_unstable();
    assert_eq!(
        without_pin, expected,
        "every use before the close: {bytes:?}"
    );
    witness.assert_released();
}

fn abort_close_future(lender: Lender) -> Stopped {
    match lender.close_async().abort() {
        Ok(lender) => Stopped::HandedBack(lender),
        Err(result) => {
            result.expect("close(2) of the drained fd");
            Stopped::Closed
        }
    }
}

fn close_wait_timeout_zero(lender: Lender) -> Stopped {
    match lender.close_wait_timeout(Duration::ZERO) {
        Ok(result) => {
            result.expect("close(2) of the drained fd");
            Stopped::Closed
        }
        Err(timed_out) => Stopped::HandedBack(timed_out.into_inner()),
    }
}

#[test]
fn an_aborted_close_and_the_last_release_never_both_win() {
    revert_races_the_last_release(false, abort_close_future);
}

#[test]
fn a_bounded_close_wait_and_the_last_release_never_both_win() {
    revert_races_the_last_release(false, close_wait_timeout_zero);
}

#[test]
fn a_pin_in_flight_across_the_last_release_leaves_one_winner() {
    revert_races_the_last_release(true, abort_close_future);
}
