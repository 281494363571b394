//! A cancel names its file by identity, never by number: a cancel request dropped
//! before the rings served it, whose file then closed, does not reach the next
//! file on the same number (its plain and fixed reads, its fixed slot). One test
//! in this binary, so no other test takes the number meanwhile.
#![cfg(not(miri))]

use fdlend::io::uring::{cancel_in_flight, Ring};
use fdlend::io::LentRegion;
use fdlend::{Lender, Loan};
use nix::errno::Errno;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::mpsc;

/// Where to send the ring thread a loan, its "inbox served" signal, the thread.
type RingThread = (
    mpsc::Sender<Loan>,
    mpsc::Receiver<()>,
    std::thread::JoinHandle<Result<Vec<u8>, Errno>>,
);

/// A ring thread, made before anything is lent: it waits for a loan, pushes a
/// read of 8 bytes (plain, or through a fixed slot), reaps once (serving whatever
/// its inbox holds), says so, then reaps until the read is done.
fn ring_thread(fixed: bool, ready: mpsc::Sender<()>) -> RingThread {
    let (give, loans) = mpsc::channel::<Loan>();
    let (served, has_served) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let mut ring = Ring::new(16).unwrap();
        ready.send(()).unwrap();
        let loan = loans.recv().unwrap();
        let (done, slot) = if fixed {
            let file = ring.register(loan).unwrap();
            let read = ring.read_fixed(&file, 0, vec![0; 8]).unwrap();
            ring.submit().unwrap();
            ring.reap(|cqe| panic!("{cqe:?}"));
            served.send(()).unwrap();
            while ring.in_flight() > 0 {
                ring.submit_and_wait(1).unwrap();
                ring.reap(|cqe| panic!("{cqe:?}"));
            }
            let done = read.finish().unwrap();
            (done.result.map(|n| done.buf[..n].to_vec()), Some(file))
        } else {
            let region = LentRegion::new(loan, 0, 8).unwrap();
            let read = ring.read(region, vec![0; 8]).unwrap();
            ring.submit().unwrap();
            ring.reap(|cqe| panic!("{cqe:?}"));
            served.send(()).unwrap();
            while ring.in_flight() > 0 {
                ring.submit_and_wait(1).unwrap();
                ring.reap(|cqe| panic!("{cqe:?}"));
            }
            let done = read.finish().unwrap();
            (done.result.map(|n| done.buf[..n].to_vec()), None)
        };
        if let Some(file) = slot {
            assert!(
                !file.is_revoked(),
                "a cancel for another file revoked the slot"
            );
            assert_eq!(ring.fixed_loans(), 1, "the slot still holds its file");
            ring.release(file);
            assert_eq!(ring.fixed_loans(), 0);
        }
        done
    });
    (give, has_served, thread)
}

#[test]
fn a_dropped_cancel_never_reaches_the_next_file_on_its_number() {
    let (ready, all_ready) = mpsc::channel();
    let (to_plain, plain_served, plain) = ring_thread(false, ready.clone());
    let (to_fixed, fixed_served, fixed) = ring_thread(true, ready);
    all_ready.recv().unwrap();
    all_ready.recv().unwrap();

    let (a_read, _a_write) = nix::unistd::pipe().unwrap();
    let a = Lender::try_from(a_read).unwrap();
    let number = a.as_raw_fd();
    drop(cancel_in_flight(&a).unwrap());
    a.close_wait().unwrap();

    // B takes A's number (the lowest free one).
    let (b_read, b_write) = nix::unistd::pipe().unwrap();
    assert_eq!(b_read.as_raw_fd(), number, "B did not get A's number");
    let b = Lender::try_from(b_read).unwrap();
    to_plain.send(b.loan().unwrap()).unwrap();
    to_fixed.send(b.loan().unwrap()).unwrap();
    // Both rings pushed B's read and served their inboxes.
    plain_served.recv().unwrap();
    fixed_served.recv().unwrap();

    File::from(b_write).write_all(b"BBBBBBBBbbbbbbbb").unwrap();
    let got = [plain.join().unwrap(), fixed.join().unwrap()];
    let mut bytes: Vec<Vec<u8>> = got
        .iter()
        .map(|read| {
            read.clone()
                .unwrap_or_else(|e| panic!("B's read: {e}; {got:?}"))
        })
        .collect();
    bytes.sort();
    assert_eq!(bytes, [b"BBBBBBBB".to_vec(), b"bbbbbbbb".to_vec()]);
    assert_eq!(b.outstanding(), 0);
    b.close_wait().unwrap();
}
