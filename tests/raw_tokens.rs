//! Raw tokens (`BorrowedFd<'static>` or `RawLoan` standing for one counted loan): they
//! read the lent file, count until returned, round-trip through `into_raw`/`from_raw`,
//! cross threads, carry an epoch check that turns false once the file is revoked, and
//! a double or stale return is a typed error that takes no one's count.

mod common;

use common::{
    identity, join, memfd_with, pattern, pipe, pread_exact, read_pipe, write_end, WriteEnd,
};
use fdlend::{LendError, Lender, Loan};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

const LEN: usize = 2048;

fn lender_of(tag: u64) -> Lender {
    Lender::try_from(memfd_with(&pattern(tag, LEN))).unwrap()
}

#[test]
fn lend_fd_counts_until_return_fd() {
    let lender = lender_of(1);
    // SAFETY: returned once, below, and not used after that.
    let token = unsafe { lender.lend_fd() }.unwrap();
    assert_eq!(
        token.as_raw_fd(),
        lender.as_raw_fd(),
        "the token is the lent fd itself, no dup"
    );
    assert_eq!(lender.outstanding(), 1);
    assert_eq!(pread_exact(token, LEN, 0), pattern(1, LEN));
    assert!(fdlend::is_current(token, lender.epoch()));
    assert_eq!(fdlend::current_epoch(token), Some(lender.epoch()));
    // While the token is out, the lender will not close.
    let lender = lender.try_close().expect_err("a token is out");
    // SAFETY: `token` came from `lend_fd` above and has not been returned.
    unsafe { fdlend::return_fd(token) }.unwrap();
    assert_eq!(lender.outstanding(), 0);
    lender.try_close().expect("the token was returned").unwrap();
}

#[test]
fn into_raw_and_from_raw_round_trip_the_count() {
    let lender = lender_of(2);
    let loan = lender.loan().unwrap();
    let epoch = loan.epoch();
    let token = loan.into_raw().unwrap();
    assert_eq!(lender.outstanding(), 1, "into_raw kept the loan's count");
    assert_eq!(token.epoch(), epoch);
    // SAFETY: `token` came from `into_raw` and has not been returned.
    let loan = unsafe { Loan::from_raw(token) }.unwrap();
    assert_eq!(loan.epoch(), epoch);
    assert_eq!(
        lender.outstanding(),
        1,
        "from_raw took the count over, it did not add one"
    );
    assert_eq!(pread_exact(&loan, LEN, 0), pattern(2, LEN));

    // And the other way: a `lend_raw` token rebuilt as a loan.
    let token = lender.lend_raw().unwrap();
    // SAFETY: `token` came from `lend_raw` and has not been returned.
    let rebuilt = unsafe { Loan::from_raw(token) }.unwrap();
    assert_eq!(lender.outstanding(), 2);
    drop((loan, rebuilt));
    assert_eq!(lender.outstanding(), 0);
    lender.try_close().expect("every token came back").unwrap();
}

#[test]
fn a_returned_token_is_the_last_loan_of_a_deferred_close() {
    let (read, write) = pipe();
    let lender = Lender::try_from(write).unwrap();
    // SAFETY: returned once, below, and not used after that.
    let token = unsafe { lender.lend_fd() }.unwrap();
    let closing = lender.close();
    nix::unistd::write(token, b"t").unwrap();
    assert_eq!(
        read_pipe(&read),
        (b"t".to_vec(), WriteEnd::Open),
        "the token holds the pipe open"
    );
    assert!(closing.result().is_none());
    // SAFETY: `token` came from `lend_fd` above and has not been returned.
    unsafe { fdlend::return_fd(token) }.unwrap();
    assert_eq!(
        write_end(&read),
        WriteEnd::Closed,
        "returning the token closed it"
    );
    assert!(matches!(closing.result(), Some(Ok(()))));
}

#[test]
fn the_epoch_check_turns_false_after_close_now() {
    let lender = lender_of(3);
    let epoch = lender.epoch();
    // SAFETY: never returned nor used for I/O: after `close_now` below the only use is
    // `is_current`, which is how a token's holder checks it (SAFETY.md, raw tokens).
    let token = unsafe { lender.lend_fd() }.unwrap();
    let ticket = lender.ticket();
    assert!(fdlend::is_current(token, epoch));
    assert!(ticket.is_current());
    // SAFETY: the token is not used for I/O after this, only checked.
    unsafe { lender.close_now() }.unwrap();
    assert!(
        !fdlend::is_current(token, epoch),
        "a revoked token checks as not current"
    );
    assert!(!ticket.is_current());
    // Other tests may have reused the number meanwhile; never with this epoch.
    assert_ne!(fdlend::current_epoch(token), Some(epoch));
}

#[test]
fn a_raw_token_works_and_is_returned_on_another_thread() {
    let file = memfd_with(&pattern(4, LEN));
    let file_id = identity(&file);
    let lender = Lender::try_from(file).unwrap();
    let epoch = lender.epoch();
    // SAFETY: moved to the reader thread, which returns it once and then drops it.
    let token = unsafe { lender.lend_fd() }.unwrap();
    let returned = Arc::new(AtomicBool::new(false));
    let reader = thread::spawn({
        let returned = Arc::clone(&returned);
        move || {
            assert!(
                fdlend::is_current(token, epoch),
                "checked before trusting it"
            );
            assert_eq!(identity(token), file_id);
            assert_eq!(pread_exact(token, LEN, 0), pattern(4, LEN));
            // Release pairs with the owner's Acquire load once close_wait returns.
            returned.store(true, Ordering::Release);
            // SAFETY: `token` came from `lend_fd` and has not been returned; unused after.
            unsafe { fdlend::return_fd(token) }.unwrap();
        }
    });
    // Blocks until the reader's return_fd: only that can drain the count.
    lender.close_wait().unwrap();
    assert!(
        returned.load(Ordering::Acquire),
        "close_wait returned before the token did"
    );
    join(reader);
}

#[test]
fn a_token_made_on_another_thread_comes_back_as_a_loan() {
    let lender = lender_of(5);
    let loan = lender.loan().unwrap();
    let token = join(thread::spawn(move || {
        assert_eq!(pread_exact(&loan, LEN, 0), pattern(5, LEN));
        loan.into_raw().unwrap()
    }));
    assert_eq!(
        lender.outstanding(),
        1,
        "the token carries the loan's count back"
    );
    // SAFETY: `token` came from `into_raw` on the other thread and has not been returned.
    let loan = unsafe { Loan::from_raw(token) }.unwrap();
    assert_eq!(loan.epoch(), lender.epoch());
    drop(loan);
    lender.try_close().expect("nothing lent").unwrap();
}

#[test]
fn a_double_return_fd_is_refused_and_takes_no_loans_count() {
    let (read, write) = pipe();
    let lender = Lender::try_from(write).unwrap();
    let fd = lender.as_raw_fd();
    let loan = lender.loan().unwrap();
    // SAFETY: returned once (the second call below is the misuse under test, which
    // fdlend refuses because no raw token is out), never used after.
    let token = unsafe { lender.lend_fd() }.unwrap();
    // SAFETY: `token` came from `lend_fd` and has not been returned.
    unsafe { fdlend::return_fd(token) }.unwrap();
    // SAFETY: deliberately returned twice: only raw counts can be taken, and none is out.
    let again = unsafe { fdlend::return_fd(token) };
    assert_eq!(again, Err(LendError::NotLent { fd }));
    assert_eq!(
        lender.outstanding(),
        1,
        "the safe loan's count is untouched"
    );
    let closing = lender.close();
    nix::unistd::write(&loan, b"l").expect("the loan still holds the pipe open");
    assert_eq!(read_pipe(&read), (b"l".to_vec(), WriteEnd::Open));
    drop(loan);
    assert!(matches!(closing.result(), Some(Ok(()))));
    assert_eq!(write_end(&read), WriteEnd::Closed);
}

#[test]
fn a_raw_loan_returned_twice_or_after_close_now_is_a_typed_error() {
    let lender = lender_of(6);
    let fd = lender.as_raw_fd();
    let token = lender.lend_raw().unwrap();
    assert!(token.is_current());
    // SAFETY: `token` came from `lend_raw` and has not been returned.
    unsafe { fdlend::return_raw(token) }.unwrap();
    // SAFETY: the deliberate double return: refused, nothing is out.
    assert_eq!(
        unsafe { fdlend::return_raw(token) },
        Err(LendError::NotLent { fd })
    );

    let stale = lender.lend_raw().unwrap();
    let loan = lender.loan().unwrap();
    // SAFETY: neither `stale` nor `loan` is used for I/O after this.
    unsafe { lender.close_now() }.unwrap();
    assert!(!stale.is_current());
    // The number may be lent again at once: its new file's counts are not touched.
    let again = Lender::try_from(memfd_with(&pattern(7, LEN))).unwrap();
    let again_loan = again.loan().unwrap();
    // SAFETY: returning a token of a revoked file: refused, or counted down on the
    // revoked file's own record; never on `again`'s.
    let returned = unsafe { fdlend::return_raw(stale) };
    assert!(
        matches!(
            returned,
            Ok(()) | Err(LendError::Closed { .. } | LendError::Stale { .. })
        ),
        "{returned:?}"
    );
    drop(loan);
    assert_eq!(again.outstanding(), 1, "only its own loan");
    assert_eq!(pread_exact(&again_loan, LEN, 0), pattern(7, LEN));
    drop(again_loan);
    again.try_close().expect("nothing lent").unwrap();
}

/// Rounds of the double-return race below: on the old two-step return (a load that
/// checks for a raw token, then the `fetch_sub`) a safe loan's count went missing
/// within ~80k of them.
const RACE_ROUNDS: usize = if cfg!(miri) { 300 } else { 400_000 };

#[test]
fn a_double_return_racing_the_return_never_takes_a_safe_loans_count() {
    let lender = lender_of(8);
    let fd = lender.as_raw_fd();
    let loan = lender.loan().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // Returns "the token" again and again: whenever one is out it races the owner's
    // own return of it; when none is, it is refused.
    let doubler = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut took = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: the misuse under test: a copy of tokens of `fd` returned
                // twice. Nothing uses the fd through it; the safe loan keeps it open.
                let token = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
                // SAFETY: as above.
                match unsafe { fdlend::return_fd(token) } {
                    Ok(()) => took += 1,
                    Err(LendError::NotLent { .. }) => {}
                    Err(other) => panic!("a double return failed with {other}"),
                }
            }
            took
        })
    };
    let (mut refused, mut seen_low) = (0u64, 0usize);
    let started = std::time::Instant::now();
    for _ in 0..RACE_ROUNDS {
        // SAFETY: returned at once below (or taken by the doubler); never used.
        let token = unsafe { lender.lend_fd() }.unwrap();
        // SAFETY: `token` came from `lend_fd`; the doubler may have returned it first.
        match unsafe { fdlend::return_fd(token) } {
            Ok(()) => {}
            Err(LendError::NotLent { .. }) => refused += 1,
            Err(other) => panic!("the owner's return failed with {other}"),
        }
        if lender.outstanding() == 0 {
            seen_low += 1;
        }
        // A bound for a loaded machine: the race needs both threads running.
        if started.elapsed() > std::time::Duration::from_secs(20) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let took = join(doubler);
    assert_eq!(
        seen_low, 0,
        "outstanding() read 0 while a safe loan was alive"
    );
    // Every token was given back once: by the owner, or taken by the double return,
    // or (if the doubler was preempted between its subtraction and its undo while
    // the owner's return retried) still counted, its return refused: a leak, never
    // an early close. Those the owner can still give back.
    let leaked = lender.outstanding() as u64 - 1;
    eprintln!(
        "double returns took {took} tokens; {leaked} left counted, {refused} owner returns refused"
    );
    assert_eq!(refused, took + leaked, "the books balance");
    for _ in 0..leaked {
        // SAFETY: each leaked unit is a raw token of this file still counted.
        let token = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        // SAFETY: as above.
        unsafe { fdlend::return_fd(token) }.unwrap();
    }
    assert_eq!(lender.outstanding(), 1, "the safe loan, nothing else");
    assert_eq!(pread_exact(&loan, LEN, 0), pattern(8, LEN));
    drop(loan);
    lender.try_close().expect("nothing lent").unwrap();
}
