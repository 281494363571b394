//! The owner waits for the last loan (blocking, as a future, or to take the fd back):
//! the last release's wake is never lost. A lost wake leaves the owner blocked with
//! every other thread finished, which loom reports as a deadlock.
#![cfg(loom)]

use fdlend::{Lender, Loan};
use fdlend_loom_tests::{identity, model, pipe, Seen};
use loom::thread::{self, JoinHandle};
use std::fs::File;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Two loans, each writing its byte on its own thread and returning there.
fn lend_to_writers(lender: &Lender) -> [JoinHandle<()>; 2] {
    [b"a", b"b"].map(|byte| {
        let loan: Loan = lender.loan().unwrap();
        thread::spawn(move || {
            nix::unistd::write(&loan, byte).expect("a loan's fd is open");
        })
    })
}

/// Closes the lender with `close` while two loans write and return on other threads:
/// the close must come after both bytes and release the fd, in every interleaving.
fn closes_after_both_writers(close: fn(Lender)) {
    model(move || {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        let writers = lend_to_writers(&lender);
        close(lender);
        assert_eq!(
            witness.drain_sorted(),
            (b"ab".to_vec(), true),
            "closed after both loans"
        );
        witness.assert_released();
        for writer in writers {
            writer.join().unwrap();
        }
    });
}

#[test]
fn close_wait_is_woken_by_the_last_release() {
    closes_after_both_writers(|lender| lender.close_wait().expect("close(2) of the lent fd"));
}

#[test]
fn close_async_is_woken_by_the_last_release() {
    closes_after_both_writers(|lender| {
        loom::future::block_on(lender.close_async()).expect("close(2) of the lent fd")
    });
}

#[test]
fn reclaim_is_woken_by_the_last_release() {
    model(|| {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        let writers = lend_to_writers(&lender);
        let fd = loom::future::block_on(lender.reclaim()).expect("no local loans");
        assert_eq!(
            identity(&fd),
            witness.id,
            "reclaim handed back the lent file"
        );
        assert_eq!(
            witness.drain_sorted(),
            (b"ab".to_vec(), false),
            "both loans back, fd still open"
        );
        nix::unistd::write(&fd, b"r").expect("the reclaimed fd is open and ours");
        drop(fd);
        assert_eq!(witness.drain(), (b"r".to_vec(), true));
        witness.assert_released();
        for writer in writers {
            writer.join().unwrap();
        }
    });
}

/// `Reclaim` polled once and dropped while loans may be draining: the close falls to
/// exactly one of the owner (already drained) and the last loan (still lent).
#[test]
fn abandoned_reclaim_closes_exactly_once() {
    let seen = Seen::default();
    let noted = seen.clone();
    model(move || {
        let (witness, write) = pipe();
        let lender = Lender::new(write).unwrap();
        let writers = lend_to_writers(&lender);
        let mut reclaim = lender.reclaim();
        match Pin::new(&mut reclaim).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(fd) => {
                noted.note("ready");
                drop(fd);
            }
            Poll::Pending => noted.note("abandoned"),
        }
        drop(reclaim);
        let (mut written, closed) = witness.drain();
        // Closed already (by the owner or the last loan): a second close of the
        // number, by whoever did not close it, would now hit this file.
        let canary = closed.then(|| File::open("/dev/null").unwrap());
        let canary_id = canary.as_ref().map(identity);
        for writer in writers {
            writer.join().unwrap();
        }
        let (rest, eof) = witness.drain();
        written.extend(rest);
        written.sort_unstable();
        assert_eq!(
            (written, eof),
            (b"ab".to_vec(), true),
            "closed once the loans are back"
        );
        witness.assert_released();
        assert_eq!(
            canary.as_ref().map(identity),
            canary_id,
            "something closed the number again"
        );
    });
    seen.assert_exactly(&["abandoned", "ready"]);
}
