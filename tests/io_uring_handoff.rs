//! Cross-ring hand-off with `IORING_OP_MSG_RING`: the owner's ring installs a
//! registered file into another thread's ring, which reads it with fixed ops; the
//! file stays counted as a loan until that ring releases the slot.
#![cfg(not(miri))]

mod io_common;

use fdlend::io::uring::{FixedOpError, Ring};
use fdlend::Lender;
use io_common::{pattern, TempFile};
use std::sync::{mpsc, Arc};

#[test]
fn a_file_sent_by_msg_ring_is_read_with_fixed_ops_on_another_thread_s_ring() {
    let bytes = Arc::new(pattern(256 * 1024));
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let (to_owner, mailslots) = mpsc::channel();
    let (read_done, wait_read) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let target = {
        let bytes = Arc::clone(&bytes);
        std::thread::spawn(move || {
            let mut ring = Ring::new(16).unwrap();
            let (mailslot, file) = ring.open_mailslot().unwrap();
            let early = ring.read_fixed(&file, 0, vec![0; 8]).unwrap_err();
            assert_eq!(early.reason, FixedOpError::NotInstalled);
            to_owner.send(mailslot).unwrap();
            // The install's CQE wakes this wait.
            while ring.read_fixed(&file, 0, vec![0; 1]).is_err() {
                ring.submit_and_wait(1).unwrap();
                ring.reap(|cqe| panic!("{cqe:?}"));
            }
            while ring.in_flight() > 0 {
                ring.submit_and_wait(1).unwrap();
                ring.reap(|cqe| panic!("{cqe:?}"));
            }
            let ops: Vec<_> = (0..8u64)
                .map(|i| {
                    let offset = i * 30_001;
                    (
                        offset as usize,
                        ring.read_fixed(&file, offset, vec![0; 4096]).unwrap(),
                    )
                })
                .collect();
            while ring.in_flight() > 0 {
                ring.submit_and_wait(1).unwrap();
                ring.reap(|cqe| panic!("{cqe:?}"));
            }
            for (offset, op) in ops {
                let done = op.finish().unwrap();
                assert_eq!(done.result, Ok(4096));
                assert!(done.buf == bytes[offset..offset + 4096], "at {offset}");
            }
            assert_eq!(
                ring.fixed_loans(),
                1,
                "the sent file is a loan of this ring"
            );
            read_done.send(()).unwrap();
            released.recv().unwrap();
            ring.release(file);
            assert_eq!(ring.fixed_loans(), 0);
        })
    };

    let mut ring = Ring::new(8).unwrap();
    let fixed = ring.register(lender.loan().unwrap()).unwrap();
    let mailslot = mailslots.recv().unwrap();
    let op = ring.hand_off(&fixed, mailslot).unwrap();
    while !op.is_done() {
        ring.submit_and_wait(1).unwrap();
        ring.reap(|cqe| panic!("{cqe:?}"));
    }
    op.finish().unwrap().unwrap();
    ring.release(fixed);
    wait_read.recv().unwrap();
    assert_eq!(
        lender.outstanding(),
        1,
        "the owner released its slot; the target's slot still holds the file"
    );
    release.send(()).unwrap();
    target.join().unwrap();
    assert_eq!(lender.outstanding(), 0);
    assert!(lender.try_close().is_ok());
}

#[test]
fn an_unused_mailslot_frees_its_reserved_slot() {
    let mut ring = Ring::new(4).unwrap();
    ring.reserve_fixed_files(1).unwrap();
    let (mailslot, file) = ring.open_mailslot().unwrap();
    assert!(ring.open_mailslot().is_err(), "the only slot is reserved");
    drop((mailslot, file));
    ring.reap(|_| {});
    let (_mailslot, _file) = ring.open_mailslot().unwrap();
}

#[test]
fn an_abandoned_hand_off_whose_msg_ring_fails_gives_back_slot_and_loan_at_once() {
    let file = TempFile::with(&pattern(4096));
    let lender = Lender::try_from(file.open()).unwrap();
    let (to_owner, mailslots) = mpsc::channel();
    let (failed, has_failed) = mpsc::channel::<()>();
    let (checked, slot_checked) = mpsc::channel();
    // The target ring stays alive until the owner has closed its file.
    let target = std::thread::spawn(move || {
        let mut ring = Ring::new(8).unwrap();
        ring.reserve_fixed_files(1).unwrap();
        let (mailslot, file) = ring.open_mailslot().unwrap();
        drop(file); // no one here waits for the file any more
        to_owner.send(mailslot).unwrap();
        has_failed.recv().unwrap();
        ring.reap(|cqe| panic!("{cqe:?}"));
        // The only slot is free again, with this ring alive.
        checked.send(ring.open_mailslot().is_ok()).unwrap();
        has_failed.recv().unwrap_err(); // until the owner is done
    });

    let mut ring = Ring::new(8).unwrap();
    let fixed = ring.register(lender.loan().unwrap()).unwrap();
    let mailslot = mailslots.recv().unwrap();
    // A read of no fd heads a link to the hand-off, so its MSG_RING is cancelled.
    let doomed = io_uring::opcode::Read::new(io_uring::types::Fd(-1), std::ptr::null_mut(), 0)
        .build()
        .flags(io_uring::squeue::Flags::IO_LINK)
        .user_data(1);
    // SAFETY: the read names no memory and no open fd; it only fails.
    unsafe { ring.push_foreign(&doomed) }.unwrap();
    drop(ring.hand_off(&fixed, mailslot).unwrap()); // abandoned
    let mut foreign = Vec::new();
    while ring.in_flight() > 0 || foreign.is_empty() {
        ring.submit_and_wait(1).unwrap();
        ring.reap(|cqe| foreign.push(cqe.result()));
    }
    assert_eq!(foreign, [-libc::EBADF]);
    ring.release(fixed);
    assert_eq!(
        lender.outstanding(),
        0,
        "the failed hand-off's loan came back"
    );
    let closing = lender.close();
    assert!(
        matches!(closing.result(), Some(Ok(()))),
        "close_wait would wait"
    );
    failed.send(()).unwrap();
    assert!(
        slot_checked.recv().unwrap(),
        "the target's slot was given back"
    );
    drop(failed);
    target.join().unwrap();
}
