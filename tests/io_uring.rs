//! io_uring ops on real rings: reads and sends that own their region until their
//! completion is fed, even when their handle is dropped first.
#![cfg(not(miri))]

mod io_common;

use fdlend::io::uring::{is_ours, ForeignPushError, QueueFull, Ring, SendRefused};
use fdlend::io::{AlignedBuf, LentRegion};
use fdlend::Lender;
use io_common::{identity, open_count, pattern, TempFile};
use io_uring::opcode;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

/// Submits, waits for at least one CQE, and reaps them all (none foreign here).
fn reap(ring: &mut Ring) -> usize {
    ring.submit_and_wait(1).unwrap();
    ring.reap(|cqe| panic!("only our ops are on this ring: {cqe:?}"))
}

#[test]
fn two_threads_each_read_regions_through_their_own_ring() {
    let bytes = Arc::new(pattern(256 * 1024));
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let threads: Vec<_> = (0..2u64)
        .map(|t| {
            let regions: Vec<LentRegion> = (0..8u64)
                .map(|i| {
                    LentRegion::new(lender.loan().unwrap(), t * 100_000 + i * 7919, 5000 + i)
                        .unwrap()
                })
                .collect();
            let bytes = Arc::clone(&bytes);
            std::thread::spawn(move || {
                let mut ring = Ring::new(16).unwrap();
                let pending: Vec<_> = regions
                    .into_iter()
                    .map(|region| {
                        let len = region.len() as usize;
                        ring.read(region, vec![0u8; len]).unwrap()
                    })
                    .collect();
                while ring.in_flight() > 0 {
                    reap(&mut ring);
                }
                for op in pending {
                    let done = op.finish().unwrap();
                    let n = done.result.unwrap();
                    let start = done.region.offset() as usize;
                    assert_eq!(n as u64, done.region.len());
                    assert!(
                        done.buf[..n] == bytes[start..start + n],
                        "thread {t} at {start}"
                    );
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(lender.outstanding(), 0);
    assert!(lender.try_close().is_ok());
}

#[test]
fn an_o_direct_region_reads_into_an_aligned_buffer() {
    let bytes = pattern(64 * 1024 + 100);
    let file = TempFile::with(&bytes);
    let Some(direct) = file.open_direct() else {
        return;
    };
    let lender = Lender::try_from(direct).unwrap();
    let mut ring = Ring::new(4).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 8192, 32 * 1024).unwrap();
    let op = ring
        .read(region, AlignedBuf::new(32 * 1024, 4096).unwrap())
        .unwrap();
    reap(&mut ring);
    let done = op.finish().unwrap();
    assert_eq!(done.result, Ok(32 * 1024));
    assert!(done.buf[..] == bytes[8192..8192 + 32 * 1024]);
    drop(done);
    assert!(lender.try_close().is_ok());
}

#[test]
fn a_dropped_op_keeps_the_file_open_until_its_completion_is_fed() {
    let file = TempFile::with(&pattern(4096));
    let opened = file.open();
    let id = identity(&opened);
    let lender = Lender::try_from(opened).unwrap();
    let mut ring = Ring::new(4).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 0, 4096).unwrap();
    let op = ring.read(region, vec![0; 4096]).unwrap();
    drop(op);
    assert_eq!(
        lender.outstanding(),
        1,
        "the dropped op's region is parked, not released"
    );
    let closing = lender.close();

    // The kernel finishes the read; its CQE sits in the queue, not yet fed.
    ring.submit_and_wait(1).unwrap();
    assert!(
        closing.result().is_none(),
        "not closed while the CQE is unfed"
    );
    assert_eq!(open_count(id), 1);
    assert_eq!(ring.in_flight(), 1);

    assert_eq!(ring.reap(|_| panic!("no foreign ops")), 1);
    assert!(
        matches!(closing.result(), Some(Ok(()))),
        "the fed CQE returned the last loan, which closed"
    );
    assert_eq!(open_count(id), 0);
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn close_wait_returns_only_after_every_completion_is_fed() {
    let file = TempFile::with(&pattern(8192));
    let opened = file.open();
    let id = identity(&opened);
    let lender = Lender::try_from(opened).unwrap();
    let fed = Arc::new(AtomicBool::new(false));
    let (to_ring, regions) = mpsc::channel::<LentRegion>();
    let (pushed, ack) = mpsc::channel::<()>();
    let (go, start) = mpsc::channel::<()>();
    let ring_thread = {
        let fed = Arc::clone(&fed);
        std::thread::spawn(move || {
            let mut ring = Ring::new(8).unwrap();
            for region in regions.iter().take(3) {
                // Dropped at once: only the table keeps the region now.
                drop(ring.read(region, vec![0; 4096]).unwrap());
            }
            pushed.send(()).unwrap();
            start.recv().unwrap();
            // The kernel completes all three; their CQEs wait in the queue unreaped.
            ring.submit_and_wait(3).unwrap();
            // SeqCst: ordered before the reap below, which returns the loans that
            // close_wait waits for.
            fed.store(true, Ordering::SeqCst);
            assert_eq!(ring.reap(|_| panic!("no foreign ops")), 3);
        })
    };
    for offset in [0, 1000, 4096] {
        to_ring
            .send(LentRegion::new(lender.loan().unwrap(), offset, 4096).unwrap())
            .unwrap();
    }
    ack.recv().unwrap();
    assert_eq!(lender.outstanding(), 3);
    go.send(()).unwrap();
    lender.close_wait().unwrap();
    assert!(
        fed.load(Ordering::SeqCst),
        "close_wait returned before the CQEs were fed"
    );
    assert_eq!(open_count(id), 0);
    ring_thread.join().unwrap();
}

#[test]
fn send_ops_splice_a_region_to_a_socket_chunk_by_chunk() {
    let bytes = pattern(300 * 1024 + 17);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let server = Arc::new(listener.accept().unwrap().0);
    let reader = std::thread::spawn(move || {
        let mut all = Vec::new();
        client.read_to_end(&mut all).unwrap();
        all
    });
    let mut ring = Ring::new(8).unwrap();
    let mut rest =
        Some(LentRegion::new(lender.loan().unwrap(), 5, bytes.len() as u64 - 5).unwrap());
    let mut rounds = 0;
    while let Some(region) = rest {
        let op = ring.send(region, Arc::clone(&server)).unwrap();
        while !op.is_done() {
            reap(&mut ring);
        }
        let done = op.finish().unwrap();
        assert!(done.sent.unwrap() > 0);
        rest = done.rest;
        rounds += 1;
    }
    drop(server);
    assert!(reader.join().unwrap() == bytes[5..]);
    assert!(rounds >= 5, "64 KiB per op: {rounds}");
    assert_eq!(lender.outstanding(), 0);
    assert!(lender.try_close().is_ok());
}

#[test]
fn a_send_past_end_of_file_reports_the_short_fill_and_ends_there() {
    let bytes = pattern(1000);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let (read, write) = nix::unistd::pipe().unwrap();
    let mut ring = Ring::new(8).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 900, 500).unwrap();
    let op = ring.send(region, write).unwrap();
    while !op.is_done() {
        reap(&mut ring);
    }
    let done = op.finish().unwrap();
    assert_eq!(done.filled, Ok(100));
    assert_eq!(
        done.sent,
        Err(nix::errno::Errno::ECANCELED),
        "a short fill breaks the link"
    );
    // Resuming would meet the same end again: no region comes back to loop on.
    assert!(done.rest.is_none());
    drop(done);
    drop(read);
    assert!(lender.try_close().is_ok());
}

#[test]
fn foreign_completions_are_left_to_the_caller_and_full_queues_hand_everything_back() {
    let file = TempFile::with(&pattern(4096));
    let lender = Lender::try_from(file.open()).unwrap();
    let mut ring = Ring::new(2).unwrap();
    let nop = opcode::Nop::new().build().user_data(42);
    // SAFETY: a NOP touches no memory.
    unsafe { ring.push_foreign(&nop).unwrap() };
    let tagged = opcode::Nop::new()
        .build()
        .user_data(fdlend::io::uring::USER_DATA_TAG << 48 | 7);
    assert_eq!(
        // SAFETY: a NOP touches no memory.
        unsafe { ring.push_foreign(&tagged) },
        Err(ForeignPushError::TaggedUserData(tagged.get_user_data())),
        "a foreign SQE may not pose as one of ours"
    );
    ring.submit_and_wait(1).unwrap();
    let mut foreign = Vec::new();
    assert_eq!(ring.reap(|cqe| foreign.push(cqe.user_data())), 0);
    assert_eq!(foreign, [42], "left to the caller");
    assert!(!is_ours(42));

    let (_read, write) = nix::unistd::pipe().unwrap();
    let first = LentRegion::new(lender.loan().unwrap(), 0, 100).unwrap();
    let send = ring.send(first, write).unwrap();
    let second = LentRegion::new(lender.loan().unwrap(), 0, 100).unwrap();
    let QueueFull((second, buf)) = ring.read(second, vec![0; 100]).unwrap_err();
    assert_eq!((second.offset(), buf.len()), (0, 100));
    let (_read2, write2) = nix::unistd::pipe().unwrap();
    let refused = ring.send(second, write2).unwrap_err();
    assert!(
        matches!(refused, SendRefused::QueueFull { .. }),
        "{refused}"
    );
    drop(refused);
    assert_eq!(lender.outstanding(), 1, "only the pushed send holds a loan");
    while !send.is_done() {
        reap(&mut ring);
    }
    drop(send);
    assert_eq!(lender.outstanding(), 0);
    assert!(lender.try_close().is_ok());
}

#[test]
fn a_ring_dropped_with_ops_in_flight_leaks_rather_than_frees() {
    // A pipe that never gets data: the read is still in flight when the ring goes.
    let (read, _write) = nix::unistd::pipe().unwrap();
    let lender = Lender::try_from(read).unwrap();
    let mut ring = Ring::new(2).unwrap();
    let op = ring
        .read(
            LentRegion::new(lender.loan().unwrap(), 0, 10).unwrap(),
            vec![0; 10],
        )
        .unwrap();
    ring.submit().unwrap();
    drop((op, ring));
    assert_eq!(
        lender.outstanding(),
        1,
        "the loan is leaked with the buffer the kernel may write"
    );
    let lender = lender.try_close().unwrap_err();
    // Deferred close: never happens for a leaked loan; the fd is the price of safety.
    drop(lender);
}
