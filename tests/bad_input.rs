//! Every refusal comes back as its typed `LendError`, says which fd in its message,
//! leaks no fd (`/proc/self/fd` has as many entries after as before) and leaves a
//! lender that can still lend.
//!
//! Tests here are serialised: each counts the process's fds.

mod common;

use common::{
    identity, lend_error, memfd_with, mentions_fd, open_fd_count, pattern, pread_exact, serial,
};
use fdlend::{LendError, Lender, RegisterError};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use std::error::Error;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

const LEN: usize = 512;

/// Runs `test` and checks the process holds exactly the fds it held before.
fn leaks_nothing(test: impl FnOnce()) {
    let _serial = serial();
    let before = open_fd_count();
    test();
    assert_eq!(
        open_fd_count(),
        before,
        "an fd leaked (or one too many was closed)"
    );
}

/// The refusal's message is there and names the fd.
fn assert_explains(error: &dyn Error, fd: RawFd) {
    let message = error.to_string();
    assert!(!message.is_empty());
    assert!(
        mentions_fd(&message, fd),
        "{message:?} does not mention fd {fd}"
    );
}

/// The lender still lends, and its loans read its file.
fn assert_still_lends(lender: &Lender, tag: u64) {
    let loan = lender.loan().expect("the lender still lends");
    assert_eq!(pread_exact(&loan, LEN, 0), pattern(tag, LEN));
}

fn lender_of(tag: u64) -> Lender {
    Lender::try_from(memfd_with(&pattern(tag, LEN))).unwrap()
}

#[test]
fn pin_after_close_is_closed() {
    leaks_nothing(|| {
        let lender = lender_of(1);
        let (ticket, fd) = (lender.ticket(), lender.as_raw_fd());
        lender.try_close().expect("nothing lent").unwrap();
        let error = ticket.pin().unwrap_err();
        assert_eq!(error, LendError::Closed { fd });
        assert_explains(&error, fd);
        assert!(!ticket.is_current());
    });
}

#[test]
fn pin_while_closing_is_closing() {
    leaks_nothing(|| {
        let lender = lender_of(2);
        let (ticket, fd) = (lender.ticket(), lender.as_raw_fd());
        let loan = lender.loan().unwrap();
        let closing = lender.close();
        let error = ticket.pin().unwrap_err();
        assert_eq!(error, LendError::Closing { fd });
        assert_explains(&error, fd);
        // The refusal took no count: the one loan is still the last one.
        let clone = loan
            .try_clone()
            .expect("clones of a held loan are still allowed");
        assert_eq!(pread_exact(&clone, LEN, 0), pattern(2, LEN));
        drop((loan, clone));
        closing.wait().unwrap();
    });
}

#[test]
fn pin_after_the_number_is_reused_is_stale() {
    leaks_nothing(|| {
        let lender = lender_of(3);
        let (ticket, fd) = (lender.ticket(), lender.as_raw_fd());
        // Reuse the number deterministically: take the fd back unclosed, put another
        // file at the same number, and lend that.
        let mut number = lender.into_owned_fd().expect("nothing lent");
        let other = memfd_with(&pattern(4, LEN));
        nix::unistd::dup2(&other, &mut number).unwrap();
        drop(other);
        assert_eq!(number.as_raw_fd(), fd);
        let next = Lender::new(number).expect("the number registers afresh");
        let error = ticket.pin().unwrap_err();
        assert_eq!(error, LendError::Stale { fd });
        assert_explains(&error, fd);
        assert_eq!(next.outstanding(), 0, "the refused pin counted nothing");
        assert_still_lends(&next, 4);
        next.try_close().expect("nothing lent").unwrap();
    });
}

#[test]
fn saturation_refuses_every_way_of_taking_a_loan() {
    leaks_nothing(|| {
        let file = memfd_with(&pattern(5, LEN));
        let fd = file.as_raw_fd();
        let lender = Lender::with_max_loans(file.into(), 3).unwrap();
        assert_eq!(lender.max_loans(), 3);
        let local = lender.local_loan();
        let loans = [lender.loan().unwrap(), local.to_send().unwrap()];
        // SAFETY: returned once, below, and not used after that.
        let token = unsafe { lender.lend_fd() }.unwrap();
        let saturated = LendError::Saturated { fd, limit: 3 };
        assert_eq!(lender.loan().unwrap_err(), saturated);
        assert_eq!(loans[0].try_clone().unwrap_err(), saturated);
        assert_eq!(local.to_send().unwrap_err(), saturated);
        assert_eq!(lender.ticket().pin().unwrap_err(), saturated);
        // SAFETY: refused, so there is no token to return.
        assert_eq!(unsafe { lender.lend_fd() }.unwrap_err(), saturated);
        assert_explains(&saturated, fd);
        assert_eq!(
            lender.outstanding(),
            4,
            "three loans and one local loan: no refusal counted"
        );

        // SAFETY: `token` came from `lend_fd` above and is returned once, not used after.
        unsafe { fdlend::return_fd(token) }.unwrap();
        assert_still_lends(&lender, 5);
        drop((loans, local));
        lender.try_close().expect("nothing lent").unwrap();
    });
}

#[test]
fn a_second_registration_of_a_lent_number_is_slot_live() {
    leaks_nothing(|| {
        let lender = lender_of(6);
        let fd = lender.as_raw_fd();
        let file_id = identity(&lender);
        // SAFETY: a deliberate lie, the very bug SlotLive reports: this `OwnedFd`
        // claims a number `lender` owns. It is never used or dropped (see below).
        let impostor = unsafe { OwnedFd::from_raw_fd(fd) };
        let refused: RegisterError = Lender::new(impostor).unwrap_err();
        assert_eq!(refused.error(), LendError::SlotLive { fd });
        assert_explains(&refused, fd);
        assert_explains(&refused.error(), fd);
        assert!(refused.source().is_some());
        let impostor = refused.into_fd();
        assert_eq!(impostor.as_raw_fd(), fd, "handed back untouched");
        // Dropping it would close the fd behind `lender`'s back (the misuse SlotLive
        // exists to report); forgetting it leaves `lender` the only owner again.
        std::mem::forget(impostor);
        assert_eq!(identity(&lender), file_id);
        assert_still_lends(&lender, 6);
        lender.try_close().expect("nothing lent").unwrap();
    });
}

#[test]
fn returning_a_raw_token_twice_is_not_lent() {
    leaks_nothing(|| {
        let lender = lender_of(7);
        let fd = lender.as_raw_fd();
        // SAFETY: returned once below; the second return is the misuse under test
        // (see there); the token is never used for I/O after the first.
        let token = unsafe { lender.lend_fd() }.unwrap();
        // SAFETY: `token` came from `lend_fd` and has not been returned yet.
        unsafe { fdlend::return_fd(token) }.unwrap();
        // SAFETY: breaks "returned exactly once" on purpose, where fdlend can see it:
        // nothing else is lent, so there is no other count it could take.
        let error = unsafe { fdlend::return_fd(token) }.unwrap_err();
        assert_eq!(error, LendError::NotLent { fd });
        assert_explains(&error, fd);
        assert_eq!(lender.outstanding(), 0);
        assert_still_lends(&lender, 7);
        lender.try_close().expect("nothing lent").unwrap();
    });
}

#[test]
fn returning_a_raw_token_twice_after_the_close_is_not_lent() {
    leaks_nothing(|| {
        let lender = lender_of(8);
        let fd = lender.as_raw_fd();
        // SAFETY: returned once below, then once more on purpose (see there).
        let token = unsafe { lender.lend_fd() }.unwrap();
        let closing = lender.close();
        // SAFETY: `token` came from `lend_fd` and has not been returned yet.
        unsafe { fdlend::return_fd(token) }.unwrap();
        closing.wait().unwrap();
        // SAFETY: the second return, on purpose: the number's slot is free, so there
        // is nothing it could take. Nothing else in this binary runs meanwhile
        // (`serial`), so no other lender can have the number.
        let second = unsafe { fdlend::return_fd(token) };
        assert_eq!(second.unwrap_err(), LendError::NotLent { fd });
    });
}

#[test]
fn return_fd_of_an_unlent_fd_is_not_lent() {
    leaks_nothing(|| {
        let never_lent = memfd_with(b"plain");
        let fd = never_lent.as_raw_fd();
        // SAFETY: `never_lent` outlives every use of the token, which is only handed
        // to `return_fd` to be refused.
        let token = unsafe { BorrowedFd::borrow_raw(fd) };
        // SAFETY: deliberately not a token from `lend_fd`; fdlend must refuse it.
        let error = unsafe { fdlend::return_fd(token) }.unwrap_err();
        assert_eq!(error, LendError::NotLent { fd });
        assert_explains(&error, fd);
        drop(never_lent);

        // A lent fd with nothing lent out: the owner's own reference is not a loan.
        let lender = lender_of(9);
        let fd = lender.as_raw_fd();
        // SAFETY: `lender` owns the fd and outlives the token, which is only refused.
        let token = unsafe { BorrowedFd::borrow_raw(fd) };
        // SAFETY: not from `lend_fd`: nothing was lent, so fdlend must refuse it.
        let refused = unsafe { fdlend::return_fd(token) };
        assert_eq!(refused.unwrap_err(), LendError::NotLent { fd });
        assert_eq!(lender.outstanding(), 0);
        assert_still_lends(&lender, 9);
        lender.try_close().expect("nothing lent").unwrap();
    });
}

#[test]
fn close_wait_with_a_local_loan_says_so_and_closes_later() {
    leaks_nothing(|| {
        let lender = lender_of(10);
        let fd = lender.as_raw_fd();
        let ticket = lender.ticket();
        let local = lender.local_loan();
        let error = lender.close_wait().unwrap_err();
        assert_eq!(
            lend_error(&error),
            Some(LendError::LocalLoansOutstanding { fd, count: 1 })
        );
        assert_explains(&error, fd);
        assert_eq!(
            pread_exact(&local, LEN, 0),
            pattern(10, LEN),
            "the local loan still reads"
        );
        drop(local);
        assert_eq!(ticket.pin().unwrap_err(), LendError::Closed { fd });
    });
}

#[test]
fn registering_a_closed_number_is_invalid_fd() {
    leaks_nothing(|| {
        // A number below the limit that nothing holds: just closed by us, and no other
        // test in this binary runs meanwhile (`serial`).
        let fd = memfd_with(b"").into_raw_fd();
        // SAFETY: closes the fd `into_raw_fd` just gave us, once.
        assert_eq!(unsafe { libc::close(fd) }, 0);
        // SAFETY: a lie on purpose (the number is not open); `Lender::new` must see it
        // and hand it back, and it is forgotten, never closed (see below).
        let dangling = unsafe { OwnedFd::from_raw_fd(fd) };
        let refused = Lender::new(dangling).unwrap_err();
        assert_eq!(refused.error(), LendError::InvalidFd { fd });
        assert_explains(&refused, fd);
        // Dropping it would close a number that is not open (std aborts on that in
        // debug builds) or, worse, someone else's file opened since.
        std::mem::forget(refused.into_fd());
    });
}

/// fdlend tracks fd numbers up to 2^20 - 1, Linux's default `nr_open`. Reaching
/// 2^20 needs `RLIMIT_NOFILE` above that, which only a process allowed to raise its
/// hard limit past `nr_open` can have.
#[test]
fn a_number_beyond_the_table_is_out_of_range() {
    const BEYOND: RawFd = 1 << 20;
    leaks_nothing(|| {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        if let Err(errno) = setrlimit(
            Resource::RLIMIT_NOFILE,
            BEYOND as u64 + 1,
            BEYOND as u64 + 1,
        ) {
            let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open").unwrap_or_default();
            println!(
                "SKIPPED: cannot raise RLIMIT_NOFILE to {} ({errno}; hard limit {hard}, nr_open {}), \
                 so fd {BEYOND} cannot exist here",
                BEYOND + 1,
                nr_open.trim()
            );
            return;
        }
        let file = memfd_with(b"far");
        // SAFETY: dup2 onto a number nothing in this process uses (it was beyond the
        // limit until just now); the new `OwnedFd` is its only owner.
        let far = unsafe { OwnedFd::from_raw_fd(libc::dup2(file.as_raw_fd(), BEYOND)) };
        assert_eq!(far.as_raw_fd(), BEYOND);
        let refused = Lender::new(far).unwrap_err();
        assert_eq!(
            refused.error(),
            LendError::OutOfRange {
                fd: BEYOND,
                max: BEYOND - 1
            }
        );
        assert_explains(&refused, BEYOND);
        drop((refused.into_fd(), file));
        setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    });
}

#[test]
fn every_error_message_names_its_fd() {
    let fd = 1234;
    let errors = [
        LendError::Closed { fd },
        LendError::Closing { fd },
        LendError::Stale { fd },
        LendError::Saturated { fd, limit: 7 },
        LendError::SlotLive { fd },
        LendError::InvalidFd { fd },
        LendError::OutOfRange { fd, max: 99 },
        LendError::NotLent { fd },
        LendError::LocalLoansOutstanding { fd, count: 2 },
    ];
    for error in errors {
        assert_explains(&error, fd);
        assert_explains(&std::io::Error::from(error), fd);
    }
}
