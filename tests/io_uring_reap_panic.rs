//! A panic in user code run by `Ring::reap` (a dropped op's destination `Drop`,
//! the `foreign` callback) loses no completion: the next `reap` completes the
//! rest, every loan returns and the owner's close finishes.
#![cfg(not(miri))]

mod io_common;

use fdlend::io::uring::Ring;
use fdlend::io::LentRegion;
use fdlend::Lender;
use io_common::{pattern, TempFile};
use io_uring::opcode;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A destination whose `Drop` panics.
struct Explosive(OwnedFd);

impl AsFd for Explosive {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl Drop for Explosive {
    fn drop(&mut self) {
        panic!("the destination's Drop panics");
    }
}

/// Every loan came back: a deferred close has closed the fd.
fn closes_at_once(lender: Lender) {
    let closing = lender.close();
    assert!(
        matches!(closing.result(), Some(Ok(()))),
        "a loan never came back, so close_wait would hang"
    );
}

/// Pushes eight reads of `lender`'s file behind what is queued, waits for all of
/// their CQEs without reaping, and returns them.
fn eight_reads_completed_unreaped(
    ring: &mut Ring,
    lender: &Lender,
) -> Vec<fdlend::io::uring::ReadOp<Vec<u8>>> {
    let reads: Vec<_> = (0..8u64)
        .map(|i| {
            let region = LentRegion::new(lender.loan().unwrap(), i * 512, 512).unwrap();
            ring.read(region, vec![0; 512]).unwrap()
        })
        .collect();
    ring.submit().unwrap();
    ring.submit_and_wait(8).unwrap();
    reads
}

#[test]
fn a_panicking_destination_drop_in_reap_loses_no_completion() {
    let bytes = pattern(8192);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let mut ring = Ring::new(32).unwrap();
    let (sink_read, sink_write) = nix::unistd::pipe().unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 0, 1024).unwrap();
    let Ok(send) = ring.send(region, Explosive(sink_write)) else {
        panic!("no room for a send")
    };
    drop(send); // abandoned: `reap` drops its destination
    ring.submit_and_wait(2).unwrap();
    // Both of the send's CQEs come first, then eight reads' CQEs behind them.
    let reads = eight_reads_completed_unreaped(&mut ring, &lender);

    let caught = catch_unwind(AssertUnwindSafe(|| ring.reap(|cqe| panic!("{cqe:?}"))));
    assert!(caught.is_err(), "the destination's Drop panicked in reap");
    ring.reap(|cqe| panic!("{cqe:?}"));
    assert_eq!(ring.in_flight(), 0, "no CQE was lost to the panic");
    for (i, read) in reads.into_iter().enumerate() {
        let done = read.finish().expect("its CQE was reaped");
        assert_eq!(done.result, Ok(512));
        assert_eq!(done.buf, bytes[i * 512..(i + 1) * 512]);
    }
    let mut got = vec![0; 2048];
    let n = nix::unistd::read(&sink_read, &mut got).unwrap();
    assert_eq!(got[..n], bytes[..1024], "the send itself went through");
    closes_at_once(lender);
}

#[test]
fn a_panicking_foreign_callback_in_reap_loses_no_completion() {
    let bytes = pattern(8192);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let mut ring = Ring::new(32).unwrap();
    let nop = opcode::Nop::new().build().user_data(7);
    // SAFETY: a NOP names no buffer, fd or slot.
    unsafe { ring.push_foreign(&nop) }.unwrap();
    ring.submit_and_wait(1).unwrap();
    let reads = eight_reads_completed_unreaped(&mut ring, &lender);

    let mut foreign = Vec::new();
    let caught = catch_unwind(AssertUnwindSafe(|| {
        ring.reap(|cqe| {
            foreign.push(cqe.user_data());
            panic!("the foreign callback panics")
        })
    }));
    assert!(caught.is_err());
    assert_eq!(foreign, [7], "the foreign CQE was handed over once");
    let ours = ring.reap(|cqe| panic!("handed over twice: {cqe:?}"));
    assert_eq!(ours, 8, "the reads' CQEs were kept for this reap");
    assert_eq!(ring.in_flight(), 0);
    for (i, read) in reads.into_iter().enumerate() {
        let done = read.finish().expect("its CQE was reaped");
        assert_eq!(done.buf, bytes[i * 512..(i + 1) * 512]);
    }
    closes_at_once(lender);
}
