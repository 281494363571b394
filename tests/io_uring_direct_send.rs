//! Ring sends of O_DIRECT files: any range completes with its exact bytes
//! (unaligned edges go through an aligned bounce buffer), and a range the file
//! does not hold ends with an error instead of coming back to resume forever.
#![cfg(not(miri))]

mod io_common;

use fdlend::io::uring::{FixedFile, Ring};
use fdlend::io::LentRegion;
use fdlend::Lender;
use io_common::{pattern, TempFile};
use nix::errno::Errno;
use std::fs::File;
use std::io::Read;

/// More rounds than any range here needs: reaching it means a send made no progress.
const ROUNDS: usize = 64;

/// A pipe whose read end is drained to a `Vec` by another thread.
fn drained_pipe() -> (File, std::thread::JoinHandle<Vec<u8>>) {
    let (read, write) = nix::unistd::pipe().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        File::from(read).read_to_end(&mut got).unwrap();
        got
    });
    (File::from(write), reader)
}

fn wait_for(ring: &mut Ring, done: impl Fn() -> bool) {
    while !done() {
        ring.submit_and_wait(1).unwrap();
        ring.reap(|cqe| panic!("{cqe:?}"));
    }
}

/// Sends `[offset, offset + len)` with `Ring::send`, resuming with `rest` until
/// there is none; returns what reached the pipe and the last error, if any.
fn send_all(ring: &mut Ring, lender: &Lender, offset: u64, len: u64) -> (Vec<u8>, Option<Errno>) {
    let (out, reader) = drained_pipe();
    let mut out = Some(out);
    let mut rest = Some(LentRegion::new(lender.loan().unwrap(), offset, len).unwrap());
    let mut error = None;
    let mut rounds = 0;
    while let Some(region) = rest.take() {
        rounds += 1;
        assert!(rounds < ROUNDS, "[{offset}, +{len}) makes no progress");
        let op = ring.send(region, out.take().unwrap()).unwrap();
        wait_for(ring, || op.is_done());
        let done = op.finish().unwrap();
        out = Some(done.out);
        rest = done.rest;
        error = done.sent.err();
    }
    drop(out);
    (reader.join().unwrap(), error)
}

/// The same with `Ring::send_fixed`, advancing by what each op sent.
fn send_all_fixed(
    ring: &mut Ring,
    file: &FixedFile,
    offset: u64,
    len: u64,
) -> (Vec<u8>, Option<Errno>) {
    let (out, reader) = drained_pipe();
    let mut out = Some(out);
    let (mut at, end) = (offset, offset + len);
    let mut error = None;
    for _ in 0..ROUNDS {
        if at == end {
            break;
        }
        let op = ring
            .send_fixed(file, at, end - at, out.take().unwrap())
            .unwrap();
        wait_for(ring, || op.is_done());
        let done = op.finish().unwrap();
        out = Some(done.out);
        match done.sent {
            Ok(n) => at += n as u64,
            Err(errno) => {
                error = Some(errno);
                break;
            }
        }
    }
    assert!(
        at == end || error.is_some(),
        "[{offset}, +{len}) makes no progress"
    );
    drop(out);
    (reader.join().unwrap(), error)
}

#[test]
fn ring_sends_of_unaligned_o_direct_ranges_complete_with_exact_bytes() {
    // 10 blocks and a ragged end, so the last range's aligned read runs past it.
    let bytes = pattern(256 * 1024 + 1234);
    let file = TempFile::with(&bytes);
    let Some(direct) = file.open_direct() else {
        return;
    };
    let lender = Lender::try_from(direct).unwrap();
    let mut ring = Ring::new(16).unwrap();
    let fixed = ring.register(lender.loan().unwrap()).unwrap();
    let size = bytes.len() as u64;
    for (offset, len) in [
        (100, 1000),
        (0, 1000),
        (512, 3000),
        (4096, 8192),
        (777, 200_000),
        (size - 5000, 5000),
    ] {
        let want = &bytes[offset as usize..(offset + len) as usize];
        let (got, error) = send_all(&mut ring, &lender, offset, len);
        assert_eq!(error, None, "send [{offset}, +{len})");
        assert!(got == want, "send [{offset}, +{len}): wrong bytes");
        let (got, error) = send_all_fixed(&mut ring, &fixed, offset, len);
        assert_eq!(error, None, "send_fixed [{offset}, +{len})");
        assert!(got == want, "send_fixed [{offset}, +{len}): wrong bytes");
    }
    ring.release(fixed);
    assert_eq!(ring.in_flight(), 0);
    lender.close_wait().unwrap();
}

#[test]
fn a_ring_send_past_the_end_of_an_o_direct_file_ends_instead_of_looping() {
    let bytes = pattern(10_000);
    let file = TempFile::with(&bytes);
    let Some(direct) = file.open_direct() else {
        return;
    };
    let lender = Lender::try_from(direct).unwrap();
    let mut ring = Ring::new(16).unwrap();
    let fixed = ring.register(lender.loan().unwrap()).unwrap();
    // The region claims 5000 bytes where the file has 1000.
    let (got, error) = send_all(&mut ring, &lender, 9000, 5000);
    assert_eq!(error, Some(Errno::ECANCELED));
    assert!(got.len() <= 1000 && got[..] == bytes[9000..9000 + got.len()]);
    let (got, error) = send_all_fixed(&mut ring, &fixed, 9000, 5000);
    assert_eq!(error, Some(Errno::ECANCELED));
    assert!(
        got[..] == bytes[9000..10_000],
        "the fixed send got what there is"
    );
    // Wholly past the end.
    let (got, error) = send_all(&mut ring, &lender, 20_000, 100);
    assert_eq!((got.len(), error), (0, Some(Errno::ECANCELED)));
    ring.release(fixed);
    lender.close_wait().unwrap();
}

#[test]
fn a_ring_send_past_the_end_of_a_page_cached_file_ends_instead_of_looping() {
    let bytes = pattern(10_000);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let mut ring = Ring::new(16).unwrap();
    let (got, error) = send_all(&mut ring, &lender, 9000, 5000);
    assert_eq!(error, Some(Errno::ECANCELED));
    assert!(got[..] == bytes[9000..9000 + got.len()]);
    lender.close_wait().unwrap();
}
