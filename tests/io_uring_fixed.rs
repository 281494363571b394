//! Registered-file lending on real rings: a worker registers a loan once, runs
//! many fixed-file ops, releases it; the loan (so the owner's close) waits until the
//! slot is unregistered and every op that used it is reaped.
#![cfg(not(miri))]

mod io_common;

use fdlend::io::uring::{FixedOpError, RegisterRefused, Ring};
use fdlend::Lender;
use io_common::{pattern, TempFile};
use std::fs::File;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

fn reap_all(ring: &mut Ring) {
    ring.submit_and_wait(1).unwrap();
    ring.reap(|cqe| panic!("no foreign ops here: {cqe:?}"));
}

#[test]
fn a_worker_registers_once_and_reads_many_regions_with_fixed_ops() {
    let bytes = Arc::new(pattern(512 * 1024));
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let loan = lender.loan().unwrap();
    let worker = {
        let bytes = Arc::clone(&bytes);
        std::thread::spawn(move || {
            let mut ring = Ring::new(32).unwrap();
            let file = ring.register(loan).unwrap();
            for round in 0..50u64 {
                let ops: Vec<_> = (0..16u64)
                    .map(|i| {
                        let offset = (round * 16 + i) * 613 % (500 * 1024);
                        let op = ring.read_fixed(&file, offset, vec![0; 4096]).unwrap();
                        (offset as usize, op)
                    })
                    .collect();
                while ring.in_flight() > 0 {
                    reap_all(&mut ring);
                }
                for (offset, op) in ops {
                    let done = op.finish().unwrap();
                    assert_eq!(done.result, Ok(4096));
                    assert!(done.buf == bytes[offset..offset + 4096], "at {offset}");
                }
            }
            assert_eq!(ring.fixed_loans(), 1);
            ring.release(file);
            assert_eq!(
                ring.fixed_loans(),
                0,
                "no op in flight: the loan returns at once"
            );
        })
    };
    worker.join().unwrap();
    assert_eq!(lender.outstanding(), 0);
    assert!(lender.try_close().is_ok());
}

#[test]
fn close_wait_waits_until_the_slot_is_unregistered_and_its_ops_reaped() {
    let (read, write) = nix::unistd::pipe().unwrap();
    let mut writer = File::from(write);
    let lender = Lender::try_from(File::from(read)).unwrap();
    let loan = lender.loan().unwrap();
    let reaped = Arc::new(AtomicBool::new(false));
    let (ready, released) = mpsc::channel();
    let worker = {
        let reaped = Arc::clone(&reaped);
        std::thread::spawn(move || {
            let mut ring = Ring::new(8).unwrap();
            let file = ring.register(loan).unwrap();
            let op = ring.read_fixed(&file, 0, vec![0; 5]).unwrap();
            ring.submit().unwrap();
            // Released with a read in flight: unregistered now, the loan stays.
            ring.release(file);
            assert_eq!(ring.fixed_loans(), 1, "held for the op still in flight");
            ready.send(()).unwrap();
            // Give close_wait time to block on the held loan.
            std::thread::sleep(std::time::Duration::from_millis(50));
            writer.write_all(b"hello").unwrap();
            ring.submit_and_wait(1).unwrap();
            // SeqCst: ordered before the reap that returns the loan close_wait waits for.
            reaped.store(true, Ordering::SeqCst);
            ring.reap(|cqe| panic!("{cqe:?}"));
            assert_eq!(ring.fixed_loans(), 0);
            let done = op.finish().unwrap();
            assert_eq!(done.result, Ok(5));
            assert_eq!(&done.buf, b"hello");
            writer
        })
    };
    released.recv().unwrap();
    assert_eq!(lender.outstanding(), 1);
    lender.close_wait().unwrap();
    assert!(
        reaped.load(Ordering::SeqCst),
        "close_wait returned before the op's CQE was reaped"
    );
    let mut writer = worker.join().unwrap();
    assert_eq!(
        writer.write(b"x").unwrap_err().raw_os_error(),
        Some(libc::EPIPE),
        "the read end is closed: neither the fd nor the ring's slot holds it"
    );
}

#[test]
fn a_released_slot_is_reused_for_the_next_file_and_reads_its_bytes() {
    let (first_bytes, second_bytes) = (pattern(8192), vec![7u8; 8192]);
    let (first, second) = (TempFile::with(&first_bytes), TempFile::with(&second_bytes));
    let (a, b) = (
        Lender::try_from(first.open()).unwrap(),
        Lender::try_from(second.open()).unwrap(),
    );
    let mut ring = Ring::new(4).unwrap();
    ring.reserve_fixed_files(1).unwrap();
    let file_a = ring.register(a.loan().unwrap()).unwrap();
    let refused = ring.register(b.loan().unwrap()).unwrap_err();
    assert!(
        matches!(refused, RegisterRefused::TableFull { .. }),
        "{refused}"
    );
    drop(refused);
    assert_eq!(
        b.outstanding(),
        0,
        "the refused loan came back and was dropped"
    );
    let slot = file_a.slot();
    ring.release(file_a);
    assert_eq!(a.outstanding(), 0);
    let file_b = ring.register(b.loan().unwrap()).unwrap();
    assert_eq!(file_b.slot(), slot);
    let op = ring.read_fixed(&file_b, 100, vec![0; 64]).unwrap();
    reap_all(&mut ring);
    assert_eq!(op.finish().unwrap().buf, second_bytes[100..164]);
    drop(file_b);
    assert_eq!(
        b.outstanding(),
        1,
        "a dropped FixedFile is released at the next reap"
    );
    ring.reap(|_| {});
    assert_eq!(b.outstanding(), 0);
    assert!(a.try_close().is_ok() && b.try_close().is_ok());
}

#[test]
fn a_fixed_send_splices_the_file_s_bytes_to_a_pipe() {
    let bytes = pattern(100 * 1024);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let (sink_read, sink_write) = nix::unistd::pipe().unwrap();
    let mut ring = Ring::new(4).unwrap();
    let fixed = ring.register(lender.loan().unwrap()).unwrap();
    let op = ring
        .send_fixed(&fixed, 1000, 30_000, sink_write)
        .expect("room");
    while !op.is_done() {
        reap_all(&mut ring);
    }
    let done = op.finish().expect("done");
    assert_eq!(done.filled, Ok(30_000));
    assert_eq!(done.sent, Ok(30_000));
    drop(done);
    let mut got = Vec::new();
    File::from(sink_read).read_to_end(&mut got).unwrap();
    assert!(got == bytes[1000..31_000]);
    ring.release(fixed);
    assert!(lender.try_close().is_ok());
}

#[test]
fn a_fixed_file_of_another_ring_is_refused_with_its_buffer_back() {
    let file = TempFile::with(&pattern(4096));
    let lender = Lender::try_from(file.open()).unwrap();
    let (mut home, mut other) = (Ring::new(4).unwrap(), Ring::new(4).unwrap());
    let fixed = home.register(lender.loan().unwrap()).unwrap();
    let refused = other.read_fixed(&fixed, 0, vec![9u8; 16]).unwrap_err();
    assert_eq!(refused.reason, FixedOpError::OtherRing);
    assert_eq!(refused.back, vec![9u8; 16]);
    assert_eq!(other.in_flight(), 0);
    home.release(fixed);
    assert!(lender.try_close().is_ok());
}
