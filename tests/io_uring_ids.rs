//! Op ids on real rings: a late CQE of a dropped or leaked op reaches nothing but
//! its own op, however many ops and rings came and went meanwhile; user code run by
//! an op (`as_fd`, a destination's `Drop`) may touch the ring's ops without panics.
#![cfg(not(miri))]

mod io_common;

use fdlend::io::uring::{ReadOp, Ring};
use fdlend::io::LentRegion;
use fdlend::Lender;
use io_common::{pattern, TempFile};
use std::cell::RefCell;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;

/// A lender over the read end of a fresh pipe, and its write end.
fn pipe_lender() -> (Lender, File) {
    let (read, write) = nix::unistd::pipe().unwrap();
    (Lender::try_from(read).unwrap(), File::from(write))
}

fn reap_all(ring: &mut Ring) {
    ring.submit_and_wait(1).unwrap();
    ring.reap(|cqe| panic!("no foreign ops here: {cqe:?}"));
}

/// Reads `region` into a fresh buffer on `ring` and checks the bytes.
fn read_and_check(ring: &mut Ring, region: LentRegion, bytes: &[u8]) {
    let start = region.offset() as usize;
    let len = region.len() as usize;
    let op = ring.read(region, vec![0; len]).unwrap();
    while !op.is_done() {
        reap_all(ring);
    }
    let done = op.finish().unwrap();
    assert_eq!(done.result, Ok(len));
    assert_eq!(done.buf, bytes[start..start + len]);
}

fn late_cqe_after_churn(leak: fn(ReadOp<Vec<u8>>)) {
    let bytes = pattern(64 * 1024);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let (late_lender, mut late_writer) = pipe_lender();
    let (victim_lender, mut victim_writer) = pipe_lender();

    let mut ring = Ring::new(8).unwrap();
    let late = LentRegion::new(late_lender.loan().unwrap(), 0, 8).unwrap();
    leak(ring.read(late, vec![b'.'; 8]).unwrap());
    ring.submit().unwrap();

    // 5000 ops come and go on the same ring (more than any 12-bit id space), and
    // 5000 other rings each with an op: none can take the pending op's id.
    for i in 0..5000u64 {
        let region = LentRegion::new(lender.loan().unwrap(), i * 13 % 60_000, 16).unwrap();
        read_and_check(&mut ring, region, &bytes);
        let mut other = Ring::new(2).unwrap();
        let region = LentRegion::new(lender.loan().unwrap(), i * 7 % 60_000, 8).unwrap();
        read_and_check(&mut other, region, &bytes);
    }
    assert_eq!(ring.in_flight(), 1, "only the dropped op is pending");

    let victim_region = LentRegion::new(victim_lender.loan().unwrap(), 0, 8).unwrap();
    let victim = ring.read(victim_region, vec![b'.'; 8]).unwrap();
    ring.submit().unwrap();

    late_writer.write_all(b"LATEDATA").unwrap();
    reap_all(&mut ring);
    assert!(
        !victim.is_done(),
        "the late CQE completed another op while the kernel still owns its buffer"
    );
    assert_eq!(
        ring.in_flight(),
        1,
        "the late op finished; the victim did not"
    );

    victim_writer.write_all(b"OWN DATA").unwrap();
    while !victim.is_done() {
        reap_all(&mut ring);
    }
    let done = victim.finish().unwrap();
    assert_eq!(done.result, Ok(8));
    assert_eq!(&done.buf, b"OWN DATA");
    drop(done);
    assert_eq!(victim_lender.outstanding(), 0);
    assert_eq!(lender.outstanding(), 0);
    assert!(victim_lender.try_close().is_ok());
    assert!(lender.try_close().is_ok());
    drop(late_lender);
}

#[test]
fn a_dropped_op_s_late_cqe_completes_nothing_else_after_5000_ops_and_rings() {
    late_cqe_after_churn(drop);
}

#[test]
fn a_leaked_op_s_late_cqe_completes_nothing_else_after_5000_ops_and_rings() {
    late_cqe_after_churn(std::mem::forget);
}

#[test]
fn the_late_cqe_of_a_dropped_op_returns_its_loan() {
    let (lender, mut writer) = pipe_lender();
    let mut ring = Ring::new(4).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 0, 4).unwrap();
    drop(ring.read(region, vec![0; 4]).unwrap());
    ring.submit().unwrap();
    assert_eq!(lender.outstanding(), 1, "parked while the kernel may write");
    writer.write_all(b"late").unwrap();
    reap_all(&mut ring);
    assert_eq!(lender.outstanding(), 0);
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn two_rings_on_one_thread_complete_only_their_own_ops() {
    let bytes = pattern(32 * 1024);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let (mut first, mut second) = (Ring::new(16).unwrap(), Ring::new(16).unwrap());
    let mut ops = Vec::new();
    for i in 0..8u64 {
        let ring = if i % 2 == 0 { &mut first } else { &mut second };
        let region = LentRegion::new(lender.loan().unwrap(), i * 1000, 500).unwrap();
        ops.push((i, ring.read(region, vec![0; 500]).unwrap()));
    }
    first.submit_and_wait(4).unwrap();
    first.reap(|cqe| panic!("{cqe:?}"));
    for (i, op) in &ops {
        assert_eq!(op.is_done(), i % 2 == 0, "op {i}");
    }
    second.submit_and_wait(4).unwrap();
    second.reap(|cqe| panic!("{cqe:?}"));
    for (i, op) in ops {
        let done = op.finish().unwrap();
        let start = (i * 1000) as usize;
        assert_eq!(done.buf, bytes[start..start + 500]);
    }
    assert!(lender.try_close().is_ok());
}

/// A destination whose `as_fd` and `Drop` reach into the ring's ops.
struct Nosy {
    fd: OwnedFd,
    peek: Rc<RefCell<Option<ReadOp<Vec<u8>>>>>,
}

impl AsFd for Nosy {
    fn as_fd(&self) -> BorrowedFd<'_> {
        if let Some(op) = self.peek.borrow().as_ref() {
            let _ = op.is_done();
        }
        self.fd.as_fd()
    }
}

impl Drop for Nosy {
    fn drop(&mut self) {
        // Drops an op handle of the same ring: it must not find the table borrowed.
        drop(self.peek.borrow_mut().take());
    }
}

#[test]
fn user_code_run_by_an_op_may_touch_the_ring_s_ops() {
    let bytes = pattern(8192);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let mut ring = Ring::new(8).unwrap();
    let peeked = ring
        .read(
            LentRegion::new(lender.loan().unwrap(), 0, 100).unwrap(),
            vec![0; 100],
        )
        .unwrap();
    let peek = Rc::new(RefCell::new(Some(peeked)));
    let (sink_read, sink_write) = nix::unistd::pipe().unwrap();
    let out = Nosy {
        fd: sink_write,
        peek: Rc::clone(&peek),
    };
    let region = LentRegion::new(lender.loan().unwrap(), 0, 4096).unwrap();
    // as_fd runs while the op is built: it queries another op of this ring.
    let Ok(send) = ring.send(region, out) else {
        panic!("no room for a send")
    };
    drop(send);
    // The abandoned send's destination is dropped in `reap`: its Drop drops the
    // other op's handle.
    while ring.in_flight() > 0 {
        reap_all(&mut ring);
    }
    assert!(peek.borrow().is_none());
    let mut got = vec![0; 4096];
    let n = nix::unistd::read(&sink_read, &mut got).unwrap();
    assert_eq!(got[..n], bytes[..n]);
    assert_eq!(lender.outstanding(), 0);
    assert!(lender.try_close().is_ok());
}

/// The ids the old predictable scheme gave a fresh ring's first ops (slot 0 was
/// the ring's own inbox read, slot 1 the first user op), both stages.
fn guessed_ids() -> Vec<u64> {
    (0..32u64)
        .flat_map(|index| [0xfd1e_0000_0000_0000 | index, 0xfd1e_0000_0080_0000 | index])
        .collect()
}

/// Pushes a read of 8 bytes of the (empty) pipe behind `lender` on `ring`, checks a
/// forged CQE did not finish it, then feeds it real bytes and checks it gets them.
fn the_pending_read_survives(ring: &mut Ring, read: ReadOp<Vec<u8>>, writer: &mut File) {
    assert!(!read.is_done(), "a forged CQE finished the read");
    let read = read
        .finish()
        .expect_err("finish() must not hand back a buffer the kernel still owns");
    writer.write_all(b"REALDATA").unwrap();
    while !read.is_done() {
        ring.submit_and_wait(1).unwrap();
        ring.reap(|cqe| panic!("{cqe:?}"));
    }
    let done = read.finish().unwrap();
    assert_eq!(done.result, Ok(8));
    assert_eq!(&done.buf, b"REALDATA");
    assert_eq!(ring.in_flight(), 0);
}

#[test]
fn a_tagged_nop_queued_before_with_ring_completes_no_op() {
    let (lender, mut writer) = pipe_lender();
    let mut uring = io_uring::IoUring::new(128).unwrap();
    let guesses = guessed_ids();
    for &data in &guesses {
        let nop = io_uring::opcode::Nop::new().build().user_data(data);
        // SAFETY: a NOP names no buffer, fd or slot; its own contract is met.
        unsafe { uring.submission().push(&nop) }.unwrap();
    }
    let mut ring = Ring::with_ring(uring).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 0, 8).unwrap();
    let read = ring.read(region, vec![0; 8]).unwrap();
    ring.submit_and_wait(guesses.len()).unwrap();
    let mut foreign = Vec::new();
    ring.reap(|cqe| foreign.push(cqe.user_data()));
    assert_eq!(foreign, guesses, "every forged CQE went to `foreign`");
    the_pending_read_survives(&mut ring, read, &mut writer);
}

#[test]
fn a_msg_ring_data_message_with_a_tagged_id_completes_no_op() {
    let (lender, mut writer) = pipe_lender();
    let uring = io_uring::IoUring::new(16).unwrap();
    let target = std::os::fd::AsRawFd::as_raw_fd(&uring);
    let mut ring = Ring::with_ring(uring).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 0, 8).unwrap();
    let read = ring.read(region, vec![0; 8]).unwrap();
    ring.submit().unwrap();

    let mut other = io_uring::IoUring::new(128).unwrap();
    let guesses = guessed_ids();
    for &data in &guesses {
        let message =
            io_uring::opcode::MsgRingData::new(io_uring::types::Fd(target), 8, data, None)
                .build()
                .user_data(1);
        // SAFETY: a data message names no memory; `target` is open (`ring` lives).
        unsafe { other.submission().push(&message) }.unwrap();
    }
    other.submit_and_wait(guesses.len()).unwrap();
    assert!(other.completion().all(|cqe| cqe.result() == 0));

    let mut foreign = Vec::new();
    while foreign.len() < guesses.len() {
        ring.submit_and_wait(1).unwrap();
        ring.reap(|cqe| foreign.push(cqe.user_data()));
    }
    foreign.sort_unstable();
    let mut sorted = guesses.clone();
    sorted.sort_unstable();
    assert_eq!(foreign, sorted, "every message went to `foreign`");
    the_pending_read_survives(&mut ring, read, &mut writer);
}
