//! Cancel-then-close on real rings: ops stuck on a pipe that never gets data are
//! cancelled on every ring (plain and fixed-file ops), each reports `ECANCELED` to
//! its owner, and the fd closes exactly once.
#![cfg(not(miri))]

mod io_common;

use fdlend::io::uring::{cancel_then_close, FixedOpError, Ring, RingOnThisThread};
use fdlend::io::LentRegion;
use fdlend::Lender;
use nix::errno::Errno;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::mpsc;

/// How many of this process's fds name the pipe `(dev, ino)` (both ends share it).
fn pipe_fds(identity: (u64, u64)) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::metadata(entry.ok()?.path()).ok())
        .filter(|meta| (meta.dev(), meta.ino()) == identity)
        .count()
}

/// A ring thread: 32 reads on the lent pipe (plain, or fixed through one
/// registration), reaped until all are done; returns their results.
fn ring_thread(
    loans: Vec<fdlend::Loan>,
    fixed: bool,
    pushed: mpsc::Sender<()>,
) -> std::thread::JoinHandle<Vec<Result<usize, Errno>>> {
    std::thread::spawn(move || {
        let mut ring = Ring::new(64).unwrap();
        let mut results = Vec::new();
        if fixed {
            let mut loans = loans;
            let file = ring.register(loans.pop().unwrap()).unwrap();
            let ops: Vec<_> = (0..32)
                .map(|_| ring.read_fixed(&file, 0, vec![0; 16]).unwrap())
                .collect();
            ring.submit().unwrap();
            pushed.send(()).unwrap();
            while ring.in_flight() > 0 {
                ring.submit_and_wait(1).unwrap();
                ring.reap(|cqe| panic!("{cqe:?}"));
            }
            assert!(file.is_revoked(), "the cancel revoked the fixed slot");
            let refused = ring.read_fixed(&file, 0, vec![0; 16]).unwrap_err();
            assert_eq!(refused.reason, FixedOpError::Revoked);
            assert_eq!(ring.fixed_loans(), 0, "and returned its loan");
            results.extend(ops.into_iter().map(|op| op.finish().unwrap().result));
        } else {
            let ops: Vec<_> = loans
                .into_iter()
                .map(|loan| {
                    let region = LentRegion::new(loan, 0, 16).unwrap();
                    ring.read(region, vec![0; 16]).unwrap()
                })
                .collect();
            ring.submit().unwrap();
            pushed.send(()).unwrap();
            while ring.in_flight() > 0 {
                ring.submit_and_wait(1).unwrap();
                ring.reap(|cqe| panic!("{cqe:?}"));
            }
            results.extend(ops.into_iter().map(|op| op.finish().unwrap().result));
        }
        results
    })
}

#[test]
fn cancel_then_close_cancels_64_stuck_ops_on_two_rings_and_closes_once() {
    let (read, write) = nix::unistd::pipe().unwrap();
    let mut writer = File::from(write);
    let identity = {
        let meta = writer.metadata().unwrap();
        (meta.dev(), meta.ino())
    };
    let lender = Lender::try_from(read).unwrap();
    let raw = lender.as_raw_fd();
    assert_eq!(pipe_fds(identity), 2);
    let (pushed, all_pushed) = mpsc::channel();
    let plain = ring_thread(
        (0..32).map(|_| lender.loan().unwrap()).collect(),
        false,
        pushed.clone(),
    );
    let fixed = ring_thread(vec![lender.loan().unwrap()], true, pushed);
    all_pushed.recv().unwrap();
    all_pushed.recv().unwrap();
    assert_eq!(lender.outstanding(), 33);

    let (cancelled, closed) = cancel_then_close(lender).unwrap();
    closed.unwrap();
    assert!(cancelled.rings >= 2, "{cancelled:?}");
    assert!(cancelled.cancelled >= 64, "{cancelled:?}");

    for (name, thread) in [("plain", plain), ("fixed", fixed)] {
        let results = thread.join().unwrap();
        assert_eq!(results.len(), 32, "{name}");
        assert!(
            results.iter().all(|r| *r == Err(Errno::ECANCELED)),
            "{name}: {results:?}"
        );
    }
    // Closed: only the write end names the pipe, and writing finds no reader.
    assert_eq!(pipe_fds(identity), 1);
    assert_eq!(
        writer.write(b"x").unwrap_err().raw_os_error(),
        Some(libc::EPIPE)
    );
    // Exactly once: the number is free (or reused by someone else), and a file
    // opened now is not closed later by a stray second close.
    let reuse = File::open("/proc/self/status").unwrap();
    assert!(
        reuse.metadata().is_ok(),
        "a second close hit the reused number {raw}"
    );
}

#[test]
fn cancel_then_close_is_refused_where_a_ring_could_not_answer() {
    let (read, _write) = nix::unistd::pipe().unwrap();
    let lender = Lender::try_from(read).unwrap();
    let ring = Ring::new(4).unwrap();
    let RingOnThisThread(lender) = cancel_then_close(lender).unwrap_err();
    let mut second = Ring::new(4).unwrap();
    let RingOnThisThread(lender) = second.cancel_then_close(lender, |_| {}).unwrap_err();
    drop((ring, second));
    let (cancelled, closed) = cancel_then_close(lender).unwrap();
    closed.unwrap();
    assert_eq!(cancelled.cancelled, 0);
}

#[test]
fn an_owner_with_its_own_ring_cancels_then_closes_through_it() {
    let (read, write) = nix::unistd::pipe().unwrap();
    let mut writer = File::from(write);
    let identity = {
        let meta = writer.metadata().unwrap();
        (meta.dev(), meta.ino())
    };
    let lender = Lender::try_from(read).unwrap();
    let (pushed, all_pushed) = mpsc::channel();
    let other = ring_thread(vec![lender.loan().unwrap()], true, pushed);
    all_pushed.recv().unwrap();

    let mut ring = Ring::new(64).unwrap();
    let ops: Vec<_> = (0..32)
        .map(|_| {
            let region = LentRegion::new(lender.loan().unwrap(), 0, 16).unwrap();
            ring.read(region, vec![0; 16]).unwrap()
        })
        .collect();
    ring.submit().unwrap();
    let (cancelled, closing) = ring
        .cancel_then_close(lender, |cqe| panic!("{cqe:?}"))
        .unwrap();
    assert!(cancelled.cancelled >= 64, "{cancelled:?}");
    while ring.in_flight() > 0 {
        ring.submit_and_wait(1).unwrap();
        ring.reap(|cqe| panic!("{cqe:?}"));
    }
    let results: Vec<_> = ops.into_iter().map(|op| op.finish().unwrap()).collect();
    assert!(results
        .iter()
        .all(|done| done.result == Err(Errno::ECANCELED)));
    assert!(
        !closing.is_closed(),
        "the finished ops still hold their regions"
    );
    drop(results);
    let other = other.join().unwrap();
    assert!(
        other.iter().all(|r| *r == Err(Errno::ECANCELED)),
        "{other:?}"
    );
    assert!(matches!(closing.result(), Some(Ok(()))));
    assert_eq!(pipe_fds(identity), 1);
    assert_eq!(
        writer.write(b"x").unwrap_err().raw_os_error(),
        Some(libc::EPIPE)
    );
}

#[test]
fn cancel_then_close_cancels_a_send_stuck_on_a_full_socket() {
    let file = io_common::TempFile::with(&io_common::pattern(64 * 1024));
    let lender = Lender::try_from(file.open()).unwrap();
    let (out, peer) = std::os::unix::net::UnixStream::pair().unwrap();
    // Fill the socket so the send's second splice waits for a reader that never comes.
    out.set_nonblocking(true).unwrap();
    let chunk = [0u8; 4096];
    while (&out).write(&chunk).is_ok() {}
    out.set_nonblocking(false).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 0, 32 * 1024).unwrap();
    let (pushed, is_pushed) = mpsc::channel();
    let sender = std::thread::spawn(move || {
        let mut ring = Ring::new(8).unwrap();
        let op = ring.send(region, out).unwrap();
        ring.submit().unwrap();
        pushed.send(()).unwrap();
        while ring.in_flight() > 0 {
            ring.submit_and_wait(1).unwrap();
            ring.reap(|cqe| panic!("{cqe:?}"));
        }
        let done = op.finish().unwrap();
        (done.filled, done.sent)
    });
    is_pushed.recv().unwrap();
    let (cancelled, closed) = cancel_then_close(lender).unwrap();
    closed.unwrap();
    let (_filled, sent) = sender.join().unwrap();
    assert_eq!(sent, Err(Errno::ECANCELED), "{cancelled:?}");
    drop(peer);
}

#[test]
fn a_lender_at_its_loan_limit_still_has_its_ops_cancelled_by_id_and_no_others() {
    let (read, _write) = nix::unistd::pipe().unwrap();
    let lender = Lender::with_max_loans(read, 2).unwrap();
    let (other_read, other_write) = nix::unistd::pipe().unwrap();
    let other = Lender::try_from(other_read).unwrap();
    let loans = (lender.loan().unwrap(), lender.loan().unwrap());
    let other_loan = other.loan().unwrap();
    let (pushed, is_pushed) = mpsc::channel();
    let (cancelled_tx, was_cancelled) = mpsc::channel::<()>();
    let ring = std::thread::spawn(move || {
        let mut ring = Ring::new(16).unwrap();
        let plain = ring
            .read(LentRegion::new(loans.0, 0, 8).unwrap(), vec![0; 8])
            .unwrap();
        let file = ring.register(loans.1).unwrap();
        let fixed = ring.read_fixed(&file, 0, vec![0; 8]).unwrap();
        let bystander = ring
            .read(LentRegion::new(other_loan, 0, 8).unwrap(), vec![0; 8])
            .unwrap();
        ring.submit().unwrap();
        pushed.send(()).unwrap();
        while !(plain.is_done() && fixed.is_done()) {
            ring.submit_and_wait(1).unwrap();
            ring.reap(|cqe| panic!("{cqe:?}"));
        }
        assert!(
            !bystander.is_done(),
            "the cancel reached another file's read"
        );
        ring.release(file);
        // Their regions go back, so the owner's close can finish.
        let (plain, fixed) = (
            plain.finish().unwrap().result,
            fixed.finish().unwrap().result,
        );
        cancelled_tx.send(()).unwrap();
        while ring.in_flight() > 0 {
            ring.submit_and_wait(1).unwrap();
            ring.reap(|cqe| panic!("{cqe:?}"));
        }
        let bystander = bystander.finish().unwrap();
        (
            plain,
            fixed,
            bystander.result.map(|n| bystander.buf[..n].to_vec()),
        )
    });
    is_pushed.recv().unwrap();
    assert!(lender.loan().is_err(), "at its loan limit");
    let (cancelled, closed) = cancel_then_close(lender).unwrap();
    closed.unwrap();
    assert!(cancelled.cancelled >= 2, "{cancelled:?}");
    was_cancelled.recv().unwrap();
    drop(other);
    File::from(other_write).write_all(b"bystand!").unwrap();
    let (plain, fixed, bystander) = ring.join().unwrap();
    assert_eq!(plain, Err(Errno::ECANCELED));
    assert_eq!(fixed, Err(Errno::ECANCELED));
    assert_eq!(bystander, Ok(b"bystand!".to_vec()));
}
