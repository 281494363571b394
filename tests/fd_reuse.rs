//! fd numbers are reused the moment they close. Loans keep their own file open (so they
//! read its bytes, whatever else opens meanwhile); tickets and raw tokens of a closed
//! file never reach the file that gets its number next, whether the close was
//! deferred or revoked with `close_now`.
//!
//! Tests here are serialised: they rely on `open()` returning the lowest free number.

mod common;

use common::{
    disk_file_with, identity, join, memfd_with, occupy_with, pattern, pread_exact, serial, Identity,
};
use fdlend::{LendError, Lender, Loan, Ticket};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::mpsc;
use std::thread;

const FILES: u64 = 48;
const ROUNDS: u64 = 3;
const LEN: usize = 1024;

fn file_with(tag: u64) -> File {
    // Mostly memfds; every third a regular file on disk, so both kinds get recycled.
    if tag % 3 == 0 {
        disk_file_with(&pattern(tag, LEN))
    } else {
        memfd_with(&pattern(tag, LEN))
    }
}

/// What the test remembers of a file it lent and let go.
struct Lent {
    tag: u64,
    fd: RawFd,
    ticket: Ticket,
}

enum Command {
    Hold(u64, Identity, Loan),
    /// Drop the loans whose tag matches; reply with how many.
    DropWhere(fn(u64) -> bool, mpsc::Sender<usize>),
    /// Read every held loan; reply with how many matched their file.
    Check(mpsc::Sender<usize>),
}

/// A thread that holds loans, reads through them, and drops them when told.
fn worker() -> (mpsc::Sender<Command>, thread::JoinHandle<()>) {
    let (commands, inbox) = mpsc::channel();
    let handle = thread::spawn(move || {
        let mut held: Vec<(u64, Identity, Loan)> = Vec::new();
        for command in inbox {
            match command {
                Command::Hold(tag, id, loan) => held.push((tag, id, loan)),
                Command::DropWhere(doomed, reply) => {
                    let before = held.len();
                    held.retain(|&(tag, _, _)| !doomed(tag));
                    reply.send(before - held.len()).unwrap();
                }
                Command::Check(reply) => {
                    for (tag, id, loan) in &held {
                        assert_eq!(identity(loan), *id, "loan of file {tag} names another file");
                        assert_eq!(
                            pread_exact(loan, LEN, 0),
                            pattern(*tag, LEN),
                            "loan of file {tag} reads other bytes"
                        );
                    }
                    reply.send(held.len()).unwrap();
                }
            }
        }
    });
    (commands, handle)
}

fn ask(
    workers: &[mpsc::Sender<Command>],
    command: impl Fn(mpsc::Sender<usize>) -> Command,
) -> usize {
    let (reply, replies) = mpsc::channel();
    for worker in workers {
        worker.send(command(reply.clone())).unwrap();
    }
    replies.iter().take(workers.len()).sum()
}

fn is_even(tag: u64) -> bool {
    tag % 2 == 0
}

fn every(_: u64) -> bool {
    true
}

/// Opens `count` new files (tags from `first_tag`) and lends each; returns them by
/// fd number. Their numbers are whatever `open()` recycles.
fn storm(first_tag: u64, count: u64) -> HashMap<RawFd, (u64, Lender)> {
    (first_tag..first_tag + count)
        .map(|tag| {
            let lender =
                Lender::try_from(file_with(tag)).expect("a recycled number registers afresh");
            (lender.as_raw_fd(), (tag, lender))
        })
        .collect()
}

/// An old ticket never pins: `Stale` where a new lender has its number, `Closed`
/// where nothing does. And the new lender's own ticket is a different incarnation.
fn assert_old_tickets_refused(old: &[&Lent], new: &HashMap<RawFd, (u64, Lender)>) {
    for lent in old {
        let refusal = lent
            .ticket
            .pin()
            .map(|loan| loan.epoch())
            .expect_err("an old ticket pinned a file");
        assert!(!lent.ticket.is_current());
        match new.get(&lent.fd) {
            Some((_, lender)) => {
                assert_eq!(
                    refusal,
                    LendError::Stale { fd: lent.fd },
                    "file {} at a reused number",
                    lent.tag
                );
                assert_ne!(
                    lender.epoch(),
                    lent.ticket.epoch(),
                    "same number, new incarnation"
                );
            }
            None => assert_eq!(
                refusal,
                LendError::Closed { fd: lent.fd },
                "file {}",
                lent.tag
            ),
        }
    }
}

#[test]
fn an_open_storm_recycles_numbers_but_every_loan_keeps_its_file() {
    let _serial = serial();
    let (workers, handles): (Vec<_>, Vec<_>) = (0..2).map(|_| worker()).unzip();
    for round in 0..ROUNDS {
        let base = round * 10 * FILES;
        let old: Vec<Lent> = (base..base + FILES)
            .map(|tag| {
                let file = file_with(tag);
                let id = identity(&file);
                let lender = Lender::try_from(file).unwrap();
                let lent = Lent {
                    tag,
                    fd: lender.as_raw_fd(),
                    ticket: lender.ticket(),
                };
                workers[tag as usize % 2]
                    .send(Command::Hold(tag, id, lender.loan().unwrap()))
                    .unwrap();
                // Deferred close: the loan on the worker keeps the file open.
                drop(lender);
                lent
            })
            .collect();
        for lent in &old {
            assert_eq!(
                lent.ticket.pin().unwrap_err(),
                LendError::Closing { fd: lent.fd }
            );
        }

        // Half the files close now, on the workers' threads; their numbers are free.
        assert_eq!(
            ask(&workers, |reply| Command::DropWhere(is_even, reply)),
            FILES as usize / 2
        );
        let (closed, draining): (Vec<&Lent>, Vec<&Lent>) =
            old.iter().partition(|lent| is_even(lent.tag));
        let new = storm(base + FILES, FILES);
        for lent in &closed {
            assert!(
                new.contains_key(&lent.fd),
                "open() did not recycle fd {} (test precondition)",
                lent.fd
            );
        }
        assert_old_tickets_refused(&closed, &new);
        for lent in &draining {
            assert_eq!(
                lent.ticket.pin().unwrap_err(),
                LendError::Closing { fd: lent.fd },
                "still draining"
            );
        }
        assert_eq!(
            ask(&workers, Command::Check),
            FILES as usize / 2,
            "the draining files' loans read them"
        );

        // The rest close; a second storm takes their numbers too.
        assert_eq!(
            ask(&workers, |reply| Command::DropWhere(every, reply)),
            FILES as usize / 2
        );
        let newer = storm(base + 2 * FILES, FILES);
        for lent in &draining {
            assert!(
                newer.contains_key(&lent.fd),
                "open() did not recycle fd {} (test precondition)",
                lent.fd
            );
        }
        assert_old_tickets_refused(&draining, &newer);

        // The old loans' returns touched none of the files now at their numbers.
        for (tag, lender) in new.into_values().chain(newer.into_values()) {
            assert_eq!(
                lender.outstanding(),
                0,
                "file {tag}'s lender counts no stranger's loan"
            );
            let loan = lender.ticket().pin().unwrap();
            assert_eq!(pread_exact(&loan, LEN, 0), pattern(tag, LEN));
            drop(loan);
            lender.try_close().expect("nothing lent").unwrap();
        }
    }
    drop(workers);
    handles.into_iter().for_each(join);
}

#[test]
fn after_close_now_old_handles_are_stale_and_the_next_file_is_unaffected() {
    let _serial = serial();
    let old_file = memfd_with(&pattern(1, LEN));
    let old_id = identity(&old_file);
    let fd = old_file.as_raw_fd();
    let lender = Lender::try_from(old_file).unwrap();
    let old_epoch = lender.epoch();
    let ticket = lender.ticket();
    let local = lender.local_loan();
    let loans: Vec<Loan> = (0..3).map(|_| lender.loan().unwrap()).collect();
    // SAFETY: the token is used for I/O only before `close_now` (the worker reads
    // through it before it reports `read`), and never returned after it: the worker
    // checks `is_current`, sees it stale, and discards it.
    let token = unsafe { lender.lend_fd() }.unwrap();

    let (read_tx, read_rx) = mpsc::channel();
    let (reused_tx, reused_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        for loan in &loans {
            assert_eq!(pread_exact(loan, LEN, 0), pattern(1, LEN));
        }
        assert_eq!(pread_exact(token, LEN, 0), pattern(1, LEN));
        read_tx.send(()).unwrap();
        // From here on the old file may be revoked: no I/O through these.
        reused_rx.recv().unwrap();
        for loan in &loans {
            assert!(!loan.is_current(), "a revoked loan knows it");
        }
        assert!(
            !fdlend::is_current(token, old_epoch),
            "the raw token's holder can tell its file is gone"
        );
        drop(loans);
    });
    read_rx.recv().unwrap();

    // SAFETY: the holder thread does no I/O through its loans or the token after it
    // reported `read` (above); `local` is only dropped.
    unsafe { lender.close_now() }.unwrap();
    assert!(!ticket.is_current());
    assert_eq!(ticket.pin().unwrap_err(), LendError::Closed { fd });

    let new_content = pattern(2, LEN);
    let new_file =
        occupy_with(fd, || memfd_with(&new_content)).expect("open() recycles the revoked number");
    let new_id = identity(&new_file);
    assert_ne!(new_id, old_id);
    let new_lender =
        Lender::try_from(new_file).expect("the revoked slot is free for the next file");
    let new_loan = new_lender.loan().unwrap();
    assert_ne!(new_lender.epoch(), old_epoch);
    assert_eq!(ticket.pin().unwrap_err(), LendError::Stale { fd });
    assert!(!fdlend::is_current(new_lender.as_fd(), old_epoch));
    assert_eq!(
        fdlend::current_epoch(new_lender.as_fd()),
        Some(new_lender.epoch())
    );

    // Every stale handle goes away now: loans and token on the other thread, the
    // local loan here.
    reused_tx.send(()).unwrap();
    join(holder);
    drop(local);
    assert_eq!(
        new_lender.outstanding(),
        1,
        "the stale returns counted nothing of the new file"
    );
    assert_eq!(identity(&new_loan), new_id);
    assert_eq!(pread_exact(&new_loan, LEN, 0), new_content);
    drop(new_loan);
    new_lender.try_close().expect("nothing lent").unwrap();
}
