//! A lent pipe write end closes exactly once: not while any loan is out (the read end
//! still sees a writer), at the moment the last loan returns (the read end sees EOF),
//! and never again (a file that later gets the same fd number stays open).
//!
//! Tests here are serialised: they recycle fd numbers on purpose.

mod common;

use common::{
    assert_not_closed_again, identity, join, pipe, read_pipe, serial, spin_until, write_end,
    write_through, Identity, Parker, WriteEnd,
};
use fdlend::{Closing, LendError, Lender};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::mpsc;
use std::task::Poll;
use std::thread;

/// A thread holding one loan of the write end; it writes `tag` through it, then
/// drops it when told to and says when it has.
struct Holder {
    release: mpsc::Sender<()>,
    released: mpsc::Receiver<()>,
    thread: thread::JoinHandle<()>,
}

fn hold(lender: &Lender, tag: u8, pipe_id: Identity) -> Holder {
    let loan = lender.loan().unwrap();
    let (release, release_rx) = mpsc::channel();
    let (released_tx, released) = mpsc::channel();
    let thread = thread::spawn(move || {
        assert_eq!(identity(&loan), pipe_id, "the loan names the lent pipe");
        write_through(&loan, &[tag]);
        release_rx.recv().unwrap();
        drop(loan);
        released_tx.send(()).unwrap();
    });
    Holder {
        release,
        released,
        thread,
    }
}

impl Holder {
    fn drop_loan(self) {
        self.release.send(()).unwrap();
        self.released.recv().unwrap();
        join(self.thread);
    }
}

#[test]
fn eof_arrives_exactly_when_the_last_loan_returns() {
    let _serial = serial();
    let (read, write) = pipe();
    // Both ends of a pipe share one inode: the identity to compare loans against.
    let pipe_id = identity(&read);
    assert_eq!(identity(&write), pipe_id);
    let fd = write.as_raw_fd();
    let lender = Lender::try_from(write).unwrap();
    let holders: Vec<Holder> = (0..3u8).map(|tag| hold(&lender, tag, pipe_id)).collect();

    let closing = lender.close();
    assert!(closing.result().is_none(), "three loans are out");
    let mut written = Vec::new();
    spin_until("the holders' writes", || {
        written.extend(read_pipe(&read).0);
        written.len() == 3
    });
    written.sort_unstable();
    assert_eq!(
        written,
        [0, 1, 2],
        "each loan wrote through the one lent fd"
    );

    let last = holders.len() - 1;
    for (index, holder) in holders.into_iter().enumerate() {
        holder.drop_loan();
        if index < last {
            assert_eq!(
                write_end(&read),
                WriteEnd::Open,
                "a loan is still out after {} returned",
                index + 1
            );
            assert!(closing.result().is_none());
        } else {
            assert_eq!(
                write_end(&read),
                WriteEnd::Closed,
                "the last loan returned: EOF"
            );
        }
    }
    assert!(
        matches!(closing.result(), Some(Ok(()))),
        "close(2) succeeded: {:?}",
        closing.result()
    );
    assert_not_closed_again(fd, || {
        assert!(
            matches!(closing.result(), Some(Ok(()))),
            "asking again reports the same close"
        );
        closing.wait().expect("the one close succeeded");
    });
}

#[test]
fn local_loans_and_raw_tokens_hold_the_pipe_open_too() {
    let _serial = serial();
    let (read, write) = pipe();
    let fd = write.as_raw_fd();
    let lender = Lender::try_from(write).unwrap();
    let local = lender.local_loan();
    // SAFETY: the token is returned once, below, and not used after that.
    let token = unsafe { lender.lend_fd() }.unwrap();
    let closing = lender.close();

    write_through(&local, b"l");
    write_through(token, b"t");
    assert_eq!(read_pipe(&read), (b"lt".to_vec(), WriteEnd::Open));
    drop(local);
    assert_eq!(
        write_end(&read),
        WriteEnd::Open,
        "the raw token is still out"
    );
    assert!(closing.result().is_none());
    // SAFETY: `token` came from `lend_fd` above, is returned once, and is not used again.
    unsafe { fdlend::return_fd(token) }.unwrap();
    assert_eq!(
        write_end(&read),
        WriteEnd::Closed,
        "the token was the last loan"
    );
    assert_not_closed_again(fd, || {
        assert!(matches!(closing.result(), Some(Ok(()))));
        // SAFETY: deliberately returns the token a second time to check that fdlend
        // refuses it: the slot is free, so nothing is counted or closed (the occupant
        // check around this proves it), and the token is not used for I/O.
        let second = unsafe { fdlend::return_fd(token) };
        assert_eq!(second, Err(LendError::NotLent { fd }));
    });
}

#[test]
fn closing_as_a_future_is_woken_by_the_last_loan_and_reports_once() {
    let _serial = serial();
    let (read, write) = pipe();
    let fd = write.as_raw_fd();
    let pipe_id = identity(&read);
    let lender = Lender::try_from(write).unwrap();
    let holder = hold(&lender, 9, pipe_id);
    let ticket = lender.ticket();
    let mut closing: Closing = lender.close();

    let parker = Parker::new();
    assert!(
        parker.poll(&mut closing).is_pending(),
        "the holder's loan is out"
    );
    assert_eq!(ticket.pin().unwrap_err(), LendError::Closing { fd });
    spin_until("the holder's write", || !read_pipe(&read).0.is_empty());
    assert_eq!(write_end(&read), WriteEnd::Open);

    holder.drop_loan();
    assert_eq!(write_end(&read), WriteEnd::Closed);
    assert!(
        parker.wakes() >= 1,
        "the returning loan woke the waiting future"
    );
    assert!(matches!(parker.poll(&mut closing), Poll::Ready(Ok(()))));
    assert_not_closed_again(fd, || {
        // The occupant holds the number but is not lent: the old ticket finds it free.
        assert_eq!(ticket.pin().unwrap_err(), LendError::Closed { fd });
        assert!(matches!(closing.result(), Some(Ok(()))));
        drop(closing);
    });
}

#[test]
fn a_dropped_lender_closes_once_on_the_last_loans_thread() {
    let _serial = serial();
    let (read, write) = pipe();
    let fd = write.as_raw_fd();
    let lender = Lender::try_from(write).unwrap();
    let loan = lender.loan().unwrap();
    let clone = loan.clone();
    drop(lender);
    assert_eq!(write_end(&read), WriteEnd::Open);
    let (first, second) = (
        thread::spawn(move || drop(loan)),
        thread::spawn(move || write_through(clone.as_fd(), b"c")),
    );
    join(first);
    join(second);
    assert_eq!(read_pipe(&read), (b"c".to_vec(), WriteEnd::Closed));
    assert_not_closed_again(fd, || ());
}

/// The occupant check must be able to fail: a second close of the number that lets
/// another file take it is seen.
#[test]
fn the_occupant_check_sees_the_number_closed_again() {
    let _serial = serial();
    let (_read, write) = pipe();
    let fd = write.as_raw_fd();
    drop(write);
    let other = File::open("/dev/zero").unwrap();
    let caught = std::panic::catch_unwind(|| {
        assert_not_closed_again(fd, || {
            // SAFETY: closes the occupant's file behind its back on purpose, the way a
            // double close would, and atomically puts another file at the number so
            // the occupant's own eventual close still finds an open fd.
            assert_eq!(unsafe { libc::dup2(other.as_raw_fd(), fd) }, fd);
        })
    });
    assert!(
        caught.is_err(),
        "a close of the occupant's number went unnoticed"
    );
}
