//! Every close mode on a lent pipe write end, with the loan on another thread. The
//! pipe's read end is the witness: it sees a writer until the fd really closes, and
//! EOF after. Ordering is checked by observation (the holder records that it returned
//! its loan before doing so), never by sleeping.
//!
//! Tests here are serialised: some check that a closed number is not closed twice.

mod common;

use common::{
    assert_not_closed_again, identity, join, lend_error, pipe, read_pipe, serial, spin_until,
    write_end, write_through, Identity, Parker, WriteEnd,
};
use fdlend::{LendError, Lender};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

/// When the holder gives its loan back.
#[derive(Clone, Copy, PartialEq)]
enum Release {
    /// As soon as it is told.
    WhenTold,
    /// When told, and once it sees the owner has begun closing (its ticket pins as
    /// `Closing`): the loan is then returned *during* the owner's close.
    WhenClosing,
}

/// One loan of the write end, held on another thread. The holder writes `w` through
/// it at once, and records `returned` just before dropping it.
struct Holder {
    go: mpsc::Sender<()>,
    returned: Arc<AtomicBool>,
    thread: thread::JoinHandle<()>,
}

impl Holder {
    fn spawn(lender: &Lender, release: Release) -> Holder {
        let loan = lender.loan().unwrap();
        let ticket = lender.ticket();
        let returned = Arc::new(AtomicBool::new(false));
        let (go, told) = mpsc::channel();
        let thread = thread::spawn({
            let returned = Arc::clone(&returned);
            move || {
                write_through(&loan, b"w");
                told.recv().unwrap();
                if release == Release::WhenClosing {
                    let closing = Err(LendError::Closing { fd: ticket.fd() });
                    spin_until("the owner to begin closing", || {
                        ticket.pin().map(drop) == closing
                    });
                }
                assert!(
                    loan.is_current(),
                    "a loan of a deferred close stays current until returned"
                );
                // Release pairs with the owner's Acquire load after its close returns.
                returned.store(true, Ordering::Release);
                drop(loan);
            }
        });
        Holder {
            go,
            returned,
            thread,
        }
    }

    fn release(&self) {
        self.go.send(()).unwrap();
    }

    fn returned(&self) -> bool {
        self.returned.load(Ordering::Acquire)
    }

    fn join(self) {
        join(self.thread);
    }
}

struct Fixture {
    read: File,
    fd: RawFd,
    pipe_id: Identity,
    lender: Lender,
}

fn lent_pipe() -> Fixture {
    let (read, write) = pipe();
    let pipe_id = identity(&read);
    let fd = write.as_raw_fd();
    Fixture {
        read,
        fd,
        pipe_id,
        lender: Lender::try_from(write).unwrap(),
    }
}

/// The holder has written (so its loan worked), and the write end is still open.
fn assert_lent_and_open(read: &File) {
    let mut seen = Vec::new();
    spin_until("the holder's write", || {
        let (bytes, state) = read_pipe(read);
        seen.extend(bytes);
        assert_eq!(state, WriteEnd::Open, "closed while a loan is out");
        !seen.is_empty()
    });
    assert_eq!(seen, b"w");
}

#[test]
fn close_reports_nothing_while_lent_and_the_result_after() {
    let _serial = serial();
    let Fixture { read, lender, .. } = lent_pipe();
    let holder = Holder::spawn(&lender, Release::WhenTold);
    let closing = lender.close();
    assert_lent_and_open(&read);
    assert!(closing.result().is_none());
    assert!(!closing.is_closed());
    holder.release();
    holder.join();
    assert!(
        matches!(closing.result(), Some(Ok(()))),
        "{:?}",
        closing.result()
    );
    assert_eq!(write_end(&read), WriteEnd::Closed);
    closing.wait().unwrap();
}

#[test]
fn close_handle_wait_blocks_until_the_last_loan_returns() {
    let _serial = serial();
    let Fixture { read, lender, .. } = lent_pipe();
    let holder = Holder::spawn(&lender, Release::WhenClosing);
    let closing = lender.close();
    assert_lent_and_open(&read);
    holder.release();
    closing.wait().unwrap();
    assert!(holder.returned(), "wait() returned before the loan did");
    assert_eq!(write_end(&read), WriteEnd::Closed);
    holder.join();
}

#[test]
fn close_with_nothing_lent_closes_at_once() {
    let _serial = serial();
    let Fixture { read, lender, .. } = lent_pipe();
    let closing = lender.close();
    assert!(matches!(closing.result(), Some(Ok(()))));
    assert_eq!(write_end(&read), WriteEnd::Closed);
}

#[test]
fn drop_defers_the_close_to_the_last_loan() {
    let _serial = serial();
    let Fixture { read, lender, .. } = lent_pipe();
    let holder = Holder::spawn(&lender, Release::WhenTold);
    let ticket = lender.ticket();
    drop(lender);
    assert_lent_and_open(&read);
    assert_eq!(
        ticket.pin().unwrap_err(),
        LendError::Closing { fd: ticket.fd() },
        "no new loans after the drop"
    );
    holder.release();
    holder.join();
    assert_eq!(write_end(&read), WriteEnd::Closed);
}

#[test]
fn close_wait_returns_only_after_the_other_threads_loan() {
    let _serial = serial();
    let Fixture { read, lender, .. } = lent_pipe();
    let holder = Holder::spawn(&lender, Release::WhenClosing);
    assert_lent_and_open(&read);
    // The holder waits to see the close begin, which happens inside close_wait.
    holder.release();
    lender.close_wait().unwrap();
    assert!(holder.returned(), "close_wait returned before the loan did");
    assert_eq!(
        write_end(&read),
        WriteEnd::Closed,
        "close_wait closed the fd before returning"
    );
    holder.join();
}

#[test]
fn close_wait_with_a_local_loan_defers_to_it() {
    let _serial = serial();
    let Fixture {
        read, fd, lender, ..
    } = lent_pipe();
    let local = lender.local_loan();
    let error = lender.close_wait().unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(
        lend_error(&error),
        Some(LendError::LocalLoansOutstanding { fd, count: 1 })
    );
    assert_eq!(
        write_end(&read),
        WriteEnd::Open,
        "the local loan keeps the fd open"
    );
    write_through(&local, b"l");
    assert_eq!(read_pipe(&read), (b"l".to_vec(), WriteEnd::Open));
    drop(local);
    assert_eq!(
        write_end(&read),
        WriteEnd::Closed,
        "the last local loan closed it"
    );
}

#[test]
fn close_async_is_woken_by_the_other_thread_and_closes() {
    let _serial = serial();
    let Fixture { read, lender, .. } = lent_pipe();
    let holder = Holder::spawn(&lender, Release::WhenClosing);
    let mut future = lender.close_async();
    let parker = Parker::new();
    assert!(parker.poll(&mut future).is_pending(), "a loan is out");
    assert_lent_and_open(&read);
    holder.release();
    parker.block_on(future).unwrap();
    assert!(
        holder.returned(),
        "the future resolved before the loan returned"
    );
    assert!(parker.wakes() >= 1, "the returning loan woke the future");
    assert_eq!(write_end(&read), WriteEnd::Closed);
    holder.join();
}

#[test]
fn close_async_with_nothing_lent_is_ready_at_once() {
    let _serial = serial();
    let Fixture { read, lender, .. } = lent_pipe();
    let mut future = lender.close_async();
    assert!(matches!(
        Parker::new().poll(&mut future),
        std::task::Poll::Ready(Ok(()))
    ));
    assert_eq!(write_end(&read), WriteEnd::Closed);
}

#[test]
fn close_async_dropped_while_lent_leaves_the_close_to_the_last_loan() {
    let _serial = serial();
    let Fixture {
        read, fd, lender, ..
    } = lent_pipe();
    let holder = Holder::spawn(&lender, Release::WhenTold);
    let mut future = lender.close_async();
    assert!(Parker::new().poll(&mut future).is_pending());
    drop(future);
    assert_lent_and_open(&read);
    holder.release();
    holder.join();
    assert_eq!(
        write_end(&read),
        WriteEnd::Closed,
        "the last loan closed it"
    );
    assert_not_closed_again(fd, || ());
}

#[test]
fn close_async_dropped_after_the_drain_closes_once_itself() {
    let _serial = serial();
    let Fixture {
        read, fd, lender, ..
    } = lent_pipe();
    let holder = Holder::spawn(&lender, Release::WhenTold);
    let mut future = lender.close_async();
    let parker = Parker::new();
    assert!(parker.poll(&mut future).is_pending());
    assert_lent_and_open(&read);
    holder.release();
    holder.join();
    assert!(parker.wakes() >= 1);
    // Drained, but the fd is the future's to close when polled: still open.
    assert_eq!(write_end(&read), WriteEnd::Open);
    drop(future);
    assert_eq!(
        write_end(&read),
        WriteEnd::Closed,
        "the dropped future closed it"
    );
    assert_not_closed_again(fd, || ());
}

#[test]
fn reclaim_resolves_to_the_same_file_unclosed() {
    let _serial = serial();
    let Fixture {
        read,
        pipe_id,
        lender,
        ..
    } = lent_pipe();
    let holder = Holder::spawn(&lender, Release::WhenClosing);
    let mut future = lender.reclaim();
    let parker = Parker::new();
    assert!(parker.poll(&mut future).is_pending());
    assert_lent_and_open(&read);
    holder.release();
    let owned: OwnedFd = parker.block_on(future).expect("no local loans");
    assert!(
        holder.returned(),
        "reclaim resolved before the loan returned"
    );
    assert_reclaimed(&read, owned, pipe_id);
    holder.join();
}

#[test]
fn reclaim_wait_returns_the_same_file_unclosed() {
    let _serial = serial();
    let Fixture {
        read,
        pipe_id,
        lender,
        ..
    } = lent_pipe();
    let holder = Holder::spawn(&lender, Release::WhenClosing);
    assert_lent_and_open(&read);
    holder.release();
    let owned = lender.reclaim_wait().expect("no local loans");
    assert!(
        holder.returned(),
        "reclaim_wait returned before the loan did"
    );
    assert_reclaimed(&read, owned, pipe_id);
    holder.join();
}

fn assert_reclaimed(read: &File, owned: OwnedFd, pipe_id: Identity) {
    assert_eq!(
        identity(&owned),
        pipe_id,
        "the reclaimed fd is the lent pipe"
    );
    write_through(&owned, b"r");
    assert_eq!(
        read_pipe(read),
        (b"r".to_vec(), WriteEnd::Open),
        "reclaimed, not closed"
    );
    drop(owned);
    assert_eq!(write_end(read), WriteEnd::Closed);
}

#[test]
fn reclaim_wait_with_a_local_loan_hands_the_lender_back() {
    let _serial = serial();
    let Fixture { read, lender, .. } = lent_pipe();
    let local = lender.local_loan();
    let lender = lender
        .reclaim_wait()
        .expect_err("would wait forever on its own local loan");
    assert!(lender.loan().is_ok(), "handed back still lending");
    drop(local);
    lender.reclaim_wait().expect("nothing lent now");
    assert_eq!(write_end(&read), WriteEnd::Closed);
}

#[test]
fn try_close_hands_the_lender_back_while_lent_and_closes_after() {
    let _serial = serial();
    let Fixture { read, lender, .. } = lent_pipe();
    let holder = Holder::spawn(&lender, Release::WhenTold);
    assert_lent_and_open(&read);
    let lender = lender.try_close().expect_err("a loan is out");
    // Handed back untouched: still open and lending, not closing.
    let loan = lender.ticket().pin().expect("still lending");
    write_through(&loan, b"x");
    drop(loan);
    assert_eq!(read_pipe(&read), (b"x".to_vec(), WriteEnd::Open));
    holder.release();
    holder.join();
    lender.try_close().expect("nothing lent now").unwrap();
    assert_eq!(write_end(&read), WriteEnd::Closed);
}

#[test]
fn into_owned_fd_hands_the_lender_back_while_lent_and_the_fd_after() {
    let _serial = serial();
    let Fixture {
        read,
        pipe_id,
        lender,
        ..
    } = lent_pipe();
    let holder = Holder::spawn(&lender, Release::WhenTold);
    assert_lent_and_open(&read);
    let lender = lender.into_owned_fd().expect_err("a loan is out");
    assert_eq!(lender.outstanding(), 1);
    holder.release();
    holder.join();
    let ticket = lender.ticket();
    let owned = lender.into_owned_fd().expect("nothing lent now");
    assert!(!ticket.is_current(), "the fd is no longer lent");
    assert_reclaimed(&read, owned, pipe_id);
}

#[test]
fn close_now_closes_while_lent_and_makes_tickets_stale() {
    let _serial = serial();
    let Fixture {
        read, fd, lender, ..
    } = lent_pipe();
    let ticket = lender.ticket();
    let loan = lender.loan().unwrap();
    let (go, told) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        told.recv().unwrap();
        // Revoked: no I/O through it any more, only the check and the drop.
        assert!(!loan.is_current(), "the loan knows it was revoked");
        drop(loan);
    });
    // SAFETY: the only loan, on `holder`, is not used for I/O at all, only checked
    // with `is_current` and dropped.
    unsafe { lender.close_now() }.unwrap();
    assert_eq!(
        write_end(&read),
        WriteEnd::Closed,
        "closed at once, loan or not"
    );
    assert!(!ticket.is_current());
    assert_eq!(ticket.pin().unwrap_err(), LendError::Closed { fd });
    go.send(()).unwrap();
    join(holder);
    assert_not_closed_again(fd, || {
        assert_eq!(
            ticket.pin().unwrap_err(),
            LendError::Closed { fd },
            "the occupant is not lent"
        );
    });
}
