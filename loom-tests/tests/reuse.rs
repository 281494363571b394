//! fd-number ABA: after `close_now` the number is reused by another file and lent
//! again. A ticket or loan of the old file must never reach the new one: pins are
//! refused (`Closed`, then `Stale`) and old loans' drops count down only their own
//! revoked record, never the new file's. The same holds at the very end of a
//! number's epochs, where the next registration is refused instead of wrapping.
#![cfg(loom)]

use fdlend::{LendError, Lender};
use fdlend_loom_tests::{identity, model, pipe, variant, Seen};
use loom::thread;
use nix::fcntl::{fcntl, FcntlArg};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

#[test]
fn stale_ticket_never_pins_the_reused_number() {
    reuse_after_close_now(None);
}

#[test]
fn at_the_end_of_its_epochs_a_number_refuses_to_wrap() {
    reuse_after_close_now(Some(u64::MAX - 2));
}

/// The scenario; `start` moves the number's epochs forward first.
fn reuse_after_close_now(start: Option<u64>) {
    let seen = Seen::default();
    let noted = seen.clone();
    model(move || {
        let (old_witness, old_write) = pipe();
        // Made before the old fd closes, so its own numbers are not the one to reuse.
        let (new_witness, new_write) = pipe();
        if let Some(start) = start {
            fdlend::testing::advance_epochs(old_write.as_raw_fd(), start).unwrap();
        }
        let old = Lender::new(old_write).unwrap();
        if let Some(start) = start {
            assert_eq!(old.epoch().get(), start);
        }
        let number = old.as_raw_fd();
        let ticket = old.ticket();
        let old_loan = old.loan().unwrap();
        let dropped_late = old.loan().unwrap();
        // A second old loan whose drop may land on either incarnation's word.
        let dropper = thread::spawn(move || drop(dropped_late));

        let noted = noted.clone();
        let holder = thread::spawn(move || {
            let pinned = ticket.pin();
            // No I/O through either: `close_now` may already have revoked them.
            drop(old_loan);
            match pinned {
                Ok(loan) => {
                    assert_eq!(
                        loan.epoch(),
                        ticket.epoch(),
                        "a pin is of the ticket's own file"
                    );
                    noted.note("pinned");
                }
                Err(error) => {
                    assert!(
                        matches!(error, LendError::Closed { .. } | LendError::Stale { .. }),
                        "old ticket pinned as {error:?}"
                    );
                    noted.note(variant(&error));
                }
            }
        });

        // SAFETY: the holder thread does no I/O through its old loan or pin.
        unsafe { old.close_now() }.expect("close(2) of the revoked fd");
        assert_eq!(
            old_witness.drain(),
            (Vec::new(), true),
            "close_now closed at once"
        );
        old_witness.assert_released();

        // The lowest free number at or above `number` is `number` itself: reuse it.
        let reused = fcntl(&new_write, FcntlArg::F_DUPFD_CLOEXEC(number)).expect("F_DUPFD");
        assert_eq!(reused, number, "the model needs the old number back");
        drop(new_write);
        // SAFETY: F_DUPFD just created `reused`; nothing else owns it.
        let new_write = unsafe { OwnedFd::from_raw_fd(reused) };
        assert_eq!(identity(&new_write), new_witness.id);
        let new = Lender::new(new_write).expect("the old incarnation left the slot free");
        assert_ne!(new.epoch(), ticket.epoch());
        let new_loan = new.loan().unwrap();

        holder.join().unwrap();
        dropper.join().unwrap();
        assert_eq!(
            new.outstanding(),
            1,
            "old handles moved the new file's count"
        );
        assert_eq!(ticket.pin().unwrap_err(), LendError::Stale { fd: number });
        nix::unistd::write(&new_loan, b"n").expect("the new file is open");
        drop(new_loan);
        let new_fd = match new.into_owned_fd() {
            Ok(fd) => fd,
            Err(lender) => panic!("the new file is still lent: {lender:?}"),
        };
        if start.is_some() {
            // The number's last epoch is used up: refused, the fd handed back open.
            let refused = Lender::new(new_fd).unwrap_err();
            assert_eq!(refused.error(), LendError::Exhausted { fd: number });
            assert_eq!(ticket.pin().unwrap_err(), LendError::Closed { fd: number });
            drop(refused.into_fd());
        } else {
            drop(new_fd);
        }
        assert_eq!(new_witness.drain(), (b"n".to_vec(), true));
    });
    seen.assert_exactly(&["Closed", "Stale", "pinned"]);
}

/// A registration racing a pin of a stale ticket of the same number: the pin finds
/// the new record in the slot only with its fields written (identity and loan limit),
/// so it is refused cleanly and gives its unit back; it never reads a half-made record
/// (whose limit of 0 would underflow) and never leaves a unit on the new file.
#[test]
fn a_registration_racing_a_stale_pin_publishes_a_whole_record() {
    let seen = Seen::default();
    let noted = seen.clone();
    model(move || {
        let (old_witness, old_write) = pipe();
        let (new_witness, new_write) = pipe();
        let old = Lender::new(old_write).unwrap();
        let number = old.as_raw_fd();
        let ticket = old.ticket();
        // Held across the reuse, so the old record is not recycled: the new file
        // gets a fresh record, published in the slot by its registration.
        let held = old.loan().unwrap();
        // SAFETY: nothing does I/O through `held` or a pin of `ticket` from here on.
        unsafe { old.close_now() }.expect("close(2) of the revoked fd");
        assert_eq!(old_witness.drain(), (Vec::new(), true));
        let reused = fcntl(&new_write, FcntlArg::F_DUPFD_CLOEXEC(number)).expect("F_DUPFD");
        assert_eq!(reused, number, "the model needs the old number back");
        drop(new_write);
        // SAFETY: F_DUPFD just created `reused`; nothing else owns it.
        let new_write = unsafe { OwnedFd::from_raw_fd(reused) };

        let noted = noted.clone();
        let pinner = thread::spawn(move || {
            let error = ticket.pin().expect_err("the old file is closed");
            assert!(
                matches!(error, LendError::Closed { .. } | LendError::Stale { .. }),
                "{error:?}"
            );
            noted.note(variant(&error));
        });
        let new = Lender::new(new_write).expect("the number is free");
        pinner.join().unwrap();
        drop(held);
        assert_eq!(
            new.outstanding(),
            0,
            "the stale pin left a unit on the new file"
        );
        match new.try_close() {
            Ok(closed) => closed.expect("close(2) of the new fd"),
            Err(lender) => panic!("nothing is lent, yet {lender:?}"),
        }
        assert_eq!(new_witness.drain(), (Vec::new(), true));
    });
    seen.assert_exactly(&["Closed", "Stale"]);
}
