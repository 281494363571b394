//! Raw returns racing a double return of the same token: the check and the
//! decrement are one atomic step, so exactly one of them takes the token, a safe
//! loan's count is never taken (not even for a moment), and a close that one of
//! them completes happens exactly once.
#![cfg(loom)]

use fdlend::Lender;
use fdlend_loom_tests::{model, pipe};
use loom::thread;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Gives back a raw token of `fd` (the same token twice, across the two threads).
fn return_raw_fd(fd: i32) -> bool {
    // SAFETY (of the model): the fd is open while the safe loan or the owner lives,
    // and `return_fd` only reads the number; returning one token twice is the
    // misuse under test, whose bound SAFETY.md states.
    let token = unsafe { BorrowedFd::borrow_raw(fd) };
    // SAFETY: as above.
    unsafe { fdlend::return_fd(token) }.is_ok()
}

#[test]
fn a_double_return_racing_the_return_takes_the_token_once_and_no_loans_count() {
    model(|| {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        let loan = lender.loan().unwrap();
        // SAFETY (of the model): returned below (and once more, the misuse).
        let fd = unsafe { lender.lend_fd() }.unwrap().as_raw_fd();
        let twice = thread::spawn(move || return_raw_fd(fd));
        let first = return_raw_fd(fd);
        assert!(lender.outstanding() >= 1, "the safe loan always counts");
        let second = twice.join().unwrap();
        assert!(first ^ second, "exactly one return took the token");
        assert_eq!(lender.outstanding(), 1, "the safe loan, nothing else");
        drop(loan);
        lender.try_close().expect("nothing lent").unwrap();
        assert!(witness.drain().1, "closed");
        witness.assert_released();
    });
}

#[test]
fn a_double_return_racing_the_last_loan_of_a_closing_file_closes_once() {
    model(|| {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        let loan = lender.loan().unwrap();
        // SAFETY (of the model): returned below, once by each thread.
        let fd = unsafe { lender.lend_fd() }.unwrap().as_raw_fd();
        let closing = lender.close();
        let twice = thread::spawn(move || return_raw_fd(fd));
        let first = return_raw_fd(fd);
        drop(loan);
        let second = twice.join().unwrap();
        assert!(first ^ second, "exactly one return took the token");
        assert!(closing.is_closed(), "the last reference closed the file");
        assert!(witness.drain().1, "closed");
        witness.assert_released();
    });
}
