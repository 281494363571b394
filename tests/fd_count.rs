//! The point of fdlend: 200k hand-offs in flight cost no fds. (A `dup()` per hand-off
//! would add 200k entries to `/proc/self/fd`, ten times this machine's `ulimit -n`.)
//!
//! One test in its own binary: it counts the process's fds, which no other test may
//! change meanwhile.

mod common;

use common::{join, memfd_with, open_fd_count, pattern, pread_exact};
use fdlend::{Lender, Loan};
use std::sync::mpsc;
use std::thread;

const THREADS: usize = 2;
const LOANS_PER_THREAD: usize = 100_000;

#[test]
fn two_hundred_thousand_loans_in_flight_add_no_fds() {
    let content = pattern(7, 4096);
    let file = memfd_with(&content);
    let before = open_fd_count();
    let lender = Lender::try_from(file).unwrap();

    let (held_tx, held_rx) = mpsc::channel();
    let holders: Vec<_> = (0..THREADS)
        .map(|_| {
            let seed = lender.loan().unwrap();
            let held_tx = held_tx.clone();
            let (release_tx, release_rx) = mpsc::channel::<()>();
            let content = content.clone();
            let holder = thread::spawn(move || {
                // The loans are made here, on the holding thread, by cloning the seed.
                let mut loans: Vec<Loan> = Vec::with_capacity(LOANS_PER_THREAD);
                loans.push(seed);
                while loans.len() < LOANS_PER_THREAD {
                    loans.push(loans[loans.len() - 1].clone());
                }
                assert_eq!(
                    pread_exact(&loans[LOANS_PER_THREAD - 1], content.len(), 0),
                    content
                );
                held_tx.send(loans.len()).unwrap();
                release_rx.recv().unwrap();
                drop(loans);
            });
            (holder, release_tx)
        })
        .collect();

    let held: usize = held_rx.iter().take(THREADS).sum();
    assert_eq!(held, THREADS * LOANS_PER_THREAD);
    assert_eq!(
        lender.outstanding(),
        held,
        "the lender counts every loan in flight"
    );
    assert_eq!(
        open_fd_count(),
        before,
        "{held} loans in flight, and not one fd more"
    );

    // While lent, the lender refuses to close and is handed back unharmed.
    let lender = lender
        .try_close()
        .expect_err("try_close must refuse while 200k loans are out");
    assert_eq!(lender.outstanding(), held);

    for (holder, release) in holders {
        release.send(()).unwrap();
        join(holder);
    }
    assert_eq!(lender.outstanding(), 0);
    lender.try_close().expect("every loan is back").unwrap();
    assert_eq!(
        open_fd_count(),
        before - 1,
        "the lent memfd, and only it, is closed"
    );
}
