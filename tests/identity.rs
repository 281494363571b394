//! A handle names one file forever: `(fd, epoch)` never comes back for another file,
//! even at the end of a number's 64-bit epochs (registration is refused there rather
//! than wrapping), and a loan revoked by `close_now` counts down only its own file's
//! record, never the file that reuses its number.

mod common;

use common::{identity, join, memfd_with, occupy_with, pattern, pread_exact, serial, spin_until};
use fdlend::{LendError, Lender};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

const LEN: usize = 512;

/// Registers `fd`, takes a ticket, and takes the fd back unclosed.
fn lend_and_take_back(fd: OwnedFd) -> (fdlend::Ticket, OwnedFd) {
    let lender = Lender::new(fd).unwrap();
    let ticket = lender.ticket();
    (ticket, lender.into_owned_fd().expect("nothing lent"))
}

#[test]
fn a_number_at_the_end_of_its_epochs_refuses_to_wrap_and_old_tickets_stay_stale() {
    let _serial = serial();
    let file = OwnedFd::from(memfd_with(&pattern(1, LEN)));
    let fd = file.as_raw_fd();
    let first = Lender::new(file).unwrap();
    let early = first.ticket();
    let file = first.into_owned_fd().expect("nothing lent");
    fdlend::testing::advance_epochs(fd, u64::MAX - 2).unwrap();
    fdlend::testing::advance_epochs(fd, 5).unwrap();

    let (second, file) = lend_and_take_back(file);
    assert_eq!(second.epoch().get(), u64::MAX - 2, "never moved back");
    let lender = Lender::new(file).unwrap();
    assert_eq!(lender.epoch().get(), u64::MAX - 1);
    for old in [early, second] {
        assert_eq!(old.pin().unwrap_err(), LendError::Stale { fd });
        assert!(!old.is_current());
    }
    let loan = lender.loan().unwrap();
    assert_eq!(pread_exact(&loan, LEN, 0), pattern(1, LEN));
    drop(loan);
    let file = lender.into_owned_fd().expect("nothing lent");

    let refused = Lender::new(file).unwrap_err();
    assert_eq!(refused.error(), LendError::Exhausted { fd });
    let file = refused.into_fd();
    assert_eq!(
        pread_exact(&file, LEN, 0),
        pattern(1, LEN),
        "handed back open"
    );
    assert_eq!(early.pin().unwrap_err(), LendError::Closed { fd });
    // Keep the number out of every other test's way: it can never be lent again.
    std::mem::forget(file);
}

#[test]
fn a_revoked_loan_dropped_after_its_number_is_reused_touches_only_its_own_file() {
    let _serial = serial();
    let old_file = memfd_with(&pattern(2, LEN));
    let fd = old_file.as_raw_fd();
    let old = Lender::try_from(old_file).unwrap();
    let old_epoch = old.epoch();
    let ticket = old.ticket();
    let revoked = [old.loan().unwrap(), old.loan().unwrap()];
    // SAFETY: the revoked loans are only dropped (and cloned, which is refused)
    // from here on, never used for I/O.
    unsafe { old.close_now() }.unwrap();

    let new_file =
        occupy_with(fd, || memfd_with(&pattern(3, LEN))).expect("the revoked number comes back");
    let new_id = identity(&new_file);
    let new = Lender::try_from(new_file).unwrap();
    assert_ne!(new.epoch(), old_epoch);
    let new_loan = new.loan().unwrap();

    let [first, second] = revoked;
    assert!(!first.is_current());
    assert_eq!(
        first.epoch(),
        old_epoch,
        "a revoked loan still names its file"
    );
    assert!(matches!(
        first.try_clone().unwrap_err(),
        LendError::Stale { .. } | LendError::Closed { .. }
    ));
    join(thread::spawn(move || drop((first, second))));
    assert_eq!(
        new.outstanding(),
        1,
        "the revoked loans took nothing from it"
    );
    assert_eq!(ticket.pin().unwrap_err(), LendError::Stale { fd });
    assert_eq!(identity(&new_loan), new_id);
    assert_eq!(pread_exact(&new_loan, LEN, 0), pattern(3, LEN));
    let closing = new.close();
    assert!(
        closing.result().is_none(),
        "its own loan still holds it open"
    );
    drop(new_loan);
    assert!(matches!(closing.result(), Some(Ok(()))));
}

/// Registrations of new files on a number while a stale ticket of it is pinned in a
/// loop: on the old pin (add first, check after) about a third were refused.
const STORM_REGISTRATIONS: usize = if cfg!(miri) { 20 } else { 800 };

#[test]
fn a_stale_ticket_pinned_in_a_loop_never_counts_on_the_numbers_new_files() {
    // Its opens and closes would otherwise take the number another test waits for.
    let _serial = serial();
    let file = OwnedFd::from(memfd_with(&pattern(3, LEN)));
    let fd = file.as_raw_fd();
    let (stale, mut file) = lend_and_take_back(file);
    let stop = Arc::new(AtomicBool::new(false));
    let pins = Arc::new(AtomicU64::new(0));
    let pinner = {
        let (stop, pins) = (Arc::clone(&stop), Arc::clone(&pins));
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match stale.pin() {
                    Err(LendError::Stale { .. } | LendError::Closed { .. }) => {
                        pins.fetch_add(1, Ordering::Relaxed);
                    }
                    other => panic!("a stale ticket pinned: {other:?}"),
                }
            }
        })
    };
    let mut refused = 0;
    for _ in 0..STORM_REGISTRATIONS {
        // A new file on the same number each time (the same open file, registered
        // anew: a new epoch), lent to nobody, then taken back.
        let mut lender = Lender::new(file).unwrap();
        assert_eq!(lender.as_raw_fd(), fd);
        // The stale ticket is pinned at least once while this file is lent.
        let before = pins.load(Ordering::Relaxed);
        spin_until("a pin of the stale ticket", || {
            pins.load(Ordering::Relaxed) != before
        });
        file = loop {
            match lender.into_owned_fd() {
                Ok(file) => break file,
                // Still ours: try again once the stale pin's unit is gone.
                Err(back) => {
                    refused += 1;
                    lender = back;
                }
            }
        };
    }
    stop.store(true, Ordering::Relaxed);
    join(pinner);
    assert_eq!(
        refused, 0,
        "a file nobody borrowed was refused its take-back {refused} times in {STORM_REGISTRATIONS}"
    );
    assert_eq!(pread_exact(&file, LEN, 0), pattern(3, LEN));
}
