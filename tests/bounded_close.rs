//! Bounded waits: every waiting close mode with a deadline. A loan held on another
//! thread past the deadline hands the lender back, lending again, with the loan
//! counted; the fd stays open and the same file; once the loan returns, a second
//! bounded close closes it, exactly once. A last return racing the deadline ends in
//! exactly one of the two.
//!
//! Tests here are serialised: some check that a closed number is not closed twice.

mod common;

use common::{
    assert_not_closed_again, identity, join, lend_error, pipe, read_pipe, serial, write_end,
    write_through, Identity, Parker, WriteEnd,
};
use fdlend::{LendError, Lender, Loan, ShardedLender, TimedOut};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::Duration;

/// Long enough that a correct close never needs more; the tests that time out hold
/// their loan for sure, so no outcome here depends on timing.
const PLENTY: Duration = Duration::from_secs(60);
const SHORT: Duration = Duration::from_millis(20);

/// What the tests look at: the pipe's read end (EOF once the write end closes), and
/// the lent write end's number and identity.
struct World {
    read: File,
    fd: RawFd,
    pipe_id: Identity,
}

fn lent_pipe() -> (World, Lender) {
    let (read, write) = pipe();
    let world = World {
        read,
        fd: write.as_raw_fd(),
        pipe_id: identity(&write),
    };
    (world, Lender::try_from(write).unwrap())
}

/// A loan held on another thread until `release` says so.
struct Holder {
    go: mpsc::Sender<()>,
    thread: thread::JoinHandle<()>,
}

impl Holder {
    fn spawn(loan: Loan) -> Holder {
        let (go, told) = mpsc::channel::<()>();
        let thread = thread::spawn(move || {
            told.recv().unwrap();
            drop(loan);
        });
        Holder { go, thread }
    }

    fn release(self) {
        self.go.send(()).unwrap();
        join(self.thread);
    }
}

impl World {
    /// `/proc/self/fd/N` names this pipe (a pipe's link is `pipe:[inode]`).
    fn listed(&self) -> bool {
        std::fs::read_link(format!("/proc/self/fd/{}", self.fd))
            .is_ok_and(|link| link.to_string_lossy() == format!("pipe:[{}]", self.pipe_id.ino))
    }

    /// The handed-back lender owns the same open file, with the held loan counted,
    /// and lends it again (loans and ticket pins).
    fn assert_lent_again(&self, timed_out: TimedOut<Lender>) -> Lender {
        assert_eq!(timed_out.outstanding(), 1, "the held loan");
        let message = timed_out.to_string();
        assert!(
            message.contains(&format!("1 loans of fd {}", self.fd))
                && message.contains("handed back"),
            "{message}"
        );
        self.assert_lending(timed_out.into_inner())
    }

    fn assert_lending(&self, lender: Lender) -> Lender {
        assert_eq!(lender.as_raw_fd(), self.fd);
        assert_eq!(lender.outstanding(), 1, "the held loan");
        assert!(self.listed(), "fd {} is still the pipe", self.fd);
        assert_eq!(identity(&lender), self.pipe_id, "the same file");
        assert_eq!(write_end(&self.read), WriteEnd::Open);
        let pinned = lender.ticket().pin().expect("tickets pin again");
        write_through(lender.loan().expect("loans are admitted again"), b"a");
        write_through(&pinned, b"b");
        drop(pinned);
        assert_eq!(read_pipe(&self.read), (b"ab".to_vec(), WriteEnd::Open));
        assert_eq!(lender.outstanding(), 1, "only the held loan is left");
        lender
    }

    /// The write end is closed, and nothing closes its number again.
    fn assert_closed_once(&self) {
        assert_eq!(write_end(&self.read), WriteEnd::Closed);
        assert!(!self.listed());
        assert_not_closed_again(self.fd, || {});
    }

    /// A second bounded close, with nothing lent now, closes at once, exactly once.
    fn assert_second_close_closes_once(&self, lender: Lender) {
        assert_eq!(lender.outstanding(), 0);
        let closed = lender.close_wait_timeout(PLENTY).expect("nothing lent");
        closed.expect("close(2)");
        self.assert_closed_once();
    }
}

#[test]
fn close_wait_timeout_hands_the_lender_back_while_a_loan_is_held() {
    let _serial = serial();
    let (world, lender) = lent_pipe();
    let holder = Holder::spawn(lender.loan().unwrap());
    let lender = world.assert_lent_again(lender.close_wait_timeout(SHORT).unwrap_err());
    holder.release();
    world.assert_second_close_closes_once(lender);
}

#[test]
fn reclaim_wait_timeout_hands_the_lender_back_then_returns_the_fd_unclosed() {
    let _serial = serial();
    let (world, lender) = lent_pipe();
    let holder = Holder::spawn(lender.loan().unwrap());
    let lender = world.assert_lent_again(lender.reclaim_wait_timeout(SHORT).unwrap_err());
    holder.release();
    let fd = lender.reclaim_wait_timeout(PLENTY).expect("nothing lent");
    assert_eq!(identity(&fd), world.pipe_id);
    assert_eq!(
        write_end(&world.read),
        WriteEnd::Open,
        "reclaimed, not closed"
    );
    drop(fd);
    world.assert_closed_once();
}

#[test]
fn a_bounded_close_waits_for_a_loan_returned_before_the_deadline() {
    let _serial = serial();
    let (world, lender) = lent_pipe();
    let holder = Holder::spawn(lender.loan().unwrap());
    let ticket = lender.ticket();
    let releaser = thread::spawn(move || {
        // Returned while the owner waits: once the close has begun.
        common::spin_until("the close to begin", || {
            ticket.pin().map(drop) == Err(LendError::Closing { fd: ticket.fd() })
        });
        holder.release();
    });
    lender
        .close_wait_timeout(PLENTY)
        .expect("the loan came back in time")
        .expect("close(2)");
    join(releaser);
    world.assert_closed_once();
}

#[test]
fn an_aborted_close_future_hands_the_lender_back_even_after_a_poll() {
    let _serial = serial();
    let (world, lender) = lent_pipe();
    let holder = Holder::spawn(lender.loan().unwrap());
    let mut future = lender.close_async();
    let parker = Parker::new();
    assert!(parker.poll(&mut future).is_pending(), "a loan is out");
    let lender = world.assert_lending(future.abort().expect("not drained"));
    holder.release();
    assert_eq!(parker.wakes(), 0, "an aborted close wakes no one");
    // Aborted after the loans are back (not polled since): the close's outcome.
    let future = lender.close_async();
    let outcome = future.abort();
    assert!(matches!(outcome, Err(Ok(()))), "{outcome:?}");
    world.assert_closed_once();
}

#[test]
fn an_aborted_reclaim_hands_the_lender_back_or_the_fd_once_drained() {
    let _serial = serial();
    let (world, lender) = lent_pipe();
    let loan = lender.loan().unwrap();
    let holder = Holder::spawn(loan.clone());
    let reclaim = lender.reclaim();
    let lender = reclaim.abort().expect("loans are out");
    drop(loan);
    let lender = world.assert_lending(lender);
    holder.release();
    let reclaim = lender.reclaim();
    match reclaim.abort() {
        Err(Ok(fd)) => assert_eq!(identity(&fd), world.pipe_id),
        other => panic!("nothing was lent, yet {other:?}"),
    }
    world.assert_closed_once();
}

#[test]
fn an_aborted_reclaim_with_local_loans_defers_to_them_as_a_drop_does() {
    let _serial = serial();
    let (world, lender) = lent_pipe();
    let local = lender.local_loan();
    let outcome = lender.reclaim().abort();
    assert!(
        matches!(
            outcome,
            Err(Err(LendError::LocalLoansOutstanding { count: 1, .. }))
        ),
        "{outcome:?}"
    );
    assert_eq!(write_end(&world.read), WriteEnd::Open);
    drop(local);
    world.assert_closed_once();
}

#[test]
fn bounded_waits_with_local_loans_refuse_as_the_unbounded_ones_do() {
    let _serial = serial();
    let (world, lender) = lent_pipe();
    let local = lender.local_loan();
    // reclaim_wait hands the lender back: so does its bounded form, at once.
    let timed_out = lender.reclaim_wait_timeout(PLENTY).unwrap_err();
    assert_eq!(timed_out.outstanding(), 1, "the local loan");
    let lender = timed_out.into_inner();
    // close_wait defers to the local loans and says so: so does its bounded form.
    let error = lender
        .close_wait_timeout(PLENTY)
        .expect("no time-out")
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(
        lend_error(&error),
        Some(LendError::LocalLoansOutstanding {
            fd: world.fd,
            count: 1
        })
    );
    assert_eq!(write_end(&world.read), WriteEnd::Open);
    drop(local);
    world.assert_closed_once();
}

#[test]
fn a_sharded_bounded_close_hands_the_core_lender_back() {
    let _serial = serial();
    let (read, write) = pipe();
    let world = World {
        read,
        fd: write.as_raw_fd(),
        pipe_id: identity(&write),
    };
    let sharded = ShardedLender::try_from(write).unwrap();
    let shared = sharded.loan();
    let timed_out = sharded.close_wait_timeout(SHORT).unwrap_err();
    assert_eq!(timed_out.outstanding(), 1, "the family's one core loan");
    let lender = world.assert_lending(timed_out.into_inner());
    let holder = thread::spawn(move || drop(shared));
    join(holder);
    world.assert_second_close_closes_once(lender);
}

/// The deadline races the last return on every round: each round ends either closed
/// (once) or with the lender back and its count right, never both, never neither.
#[test]
fn a_last_return_racing_the_deadline_closes_exactly_once_or_hands_back() {
    let _serial = serial();
    let (mut closed, mut handed_back) = (0, 0);
    for round in 0..300 {
        let (world, lender) = lent_pipe();
        let loan = lender.loan().unwrap();
        let start = Arc::new(Barrier::new(2));
        let returner = thread::spawn({
            let start = Arc::clone(&start);
            move || {
                start.wait();
                drop(loan);
            }
        });
        start.wait();
        // Deadlines from zero to a few tens of microseconds: both outcomes happen.
        match lender.close_wait_timeout(Duration::from_micros(round % 40)) {
            Ok(result) => {
                result.expect("close(2)");
                closed += 1;
                join(returner);
            }
            Err(timed_out) => {
                handed_back += 1;
                assert!(timed_out.outstanding() <= 1);
                let lender = timed_out.into_inner();
                assert_eq!(identity(&lender), world.pipe_id);
                assert_eq!(write_end(&world.read), WriteEnd::Open);
                join(returner);
                assert_eq!(lender.outstanding(), 0, "the count is right after the race");
                lender.close_wait_timeout(PLENTY).unwrap().unwrap();
            }
        }
        world.assert_closed_once();
    }
    eprintln!("closed in time: {closed}, handed back: {handed_back}");
}
