//! The `Send` step: a chain of ring sends of one range of the memfd or the
//! O_DIRECT file to a pipe another thread drains, checked for exact bytes and for
//! progress.

use super::source::file_byte;
use super::world::{index, World};
use super::Target;
use fdlend::io::uring::{Ring, SendRefused};
use fdlend::io::LentRegion;
use nix::errno::Errno;
use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;

/// A pipe whose read end another thread drains to a `Vec` until EOF; `short`
/// cuts its capacity to one page, so drains into it come up short.
fn drained_pipe(short: bool) -> (File, std::thread::JoinHandle<Vec<u8>>) {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    if short {
        nix::fcntl::fcntl(write.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
    }
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        File::from(read).read_to_end(&mut got).unwrap();
        got
    });
    (File::from(write), reader)
}

/// Reaps until `done()` (other ops' CQEs are recorded on the way).
fn wait_for(ring: &mut Ring, done: impl Fn() -> bool) {
    while !done() {
        // libFuzzer's timeout alarm (SIGALRM) interrupts waits: retry.
        match ring.submit_and_wait(1) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            other => {
                other.unwrap();
            }
        }
        ring.reap(|cqe| panic!("foreign CQE {cqe:?}"));
    }
}

impl World {
    /// Sends `[offset, offset + len)` (`offset` folded into the file plus a bit
    /// past its end) until nothing is left, then checks what the pipe got.
    pub(super) fn send(&mut self, target: Target, fixed: bool, offset: u64, len: u64, short: bool) {
        let size = self.sources[index(target)].len() as u64;
        let offset = offset % (size + 64);
        let end = offset + len;
        if self.ring().in_flight() >= 24 || (fixed && !self.register(target)) {
            return;
        }
        let (out, reader) = drained_pipe(short);
        let mut out = Some(out);
        let (mut at, mut error, mut repeats) = (offset, None, 0);
        while at < end {
            let sent = if fixed {
                self.send_fixed_once(target, at, end - at, &mut out)
            } else {
                self.send_once(target, at, end - at, &mut out)
            };
            match sent {
                // Refused with everything back (a full queue): try again later.
                None => break,
                Some(Ok(0)) => {
                    // Only the O_DIRECT fallback comes back untouched, and once.
                    repeats += 1;
                    assert!(repeats <= 1, "a send came back with the same range again");
                }
                Some(Ok(n)) => at += n,
                Some(Err(errno)) => {
                    error = Some(errno);
                    break;
                }
            }
        }
        drop(out);
        let got = reader.join().unwrap();
        let delivered = got.len() as u64;
        assert!(delivered <= size.saturating_sub(offset).min(len));
        assert!(
            got.iter()
                .enumerate()
                .all(|(k, &b)| b == file_byte(offset as usize + k)),
            "{target:?} [{offset}, +{len}): wrong bytes"
        );
        if at < end && error.is_none() {
            return; // the queue was full
        }
        if end <= size {
            assert_eq!(error, None, "{target:?} [{offset}, +{len}) failed");
            assert_eq!(
                delivered, len,
                "{target:?} [{offset}, +{len}) came up short"
            );
        } else {
            assert_eq!(
                error,
                Some(Errno::ECANCELED),
                "{target:?} [{offset}, +{len}) passes the end: it ends with a short fill"
            );
        }
    }

    /// One `Ring::send` of `[at, +len)`: the bytes it advanced, `Ok(0)` if it
    /// gave the same range back, or the error that ended it.
    fn send_once(
        &mut self,
        target: Target,
        at: u64,
        len: u64,
        out: &mut Option<File>,
    ) -> Option<Result<u64, Errno>> {
        let loan = self.sources[index(target)].lender.loan().ok()?;
        let region = LentRegion::new(loan, at, len).unwrap();
        let ring = self.ring();
        let op = match ring.send(region, out.take().unwrap()) {
            Ok(op) => op,
            Err(SendRefused::QueueFull { out: back, .. } | SendRefused::Pipe { out: back, .. }) => {
                *out = Some(back);
                let _ = ring.submit();
                return None;
            }
        };
        wait_for(ring, || op.is_done());
        let done = op.finish().unwrap();
        *out = Some(done.out);
        Some(match (done.rest, done.sent) {
            (Some(rest), _) => Ok(rest.offset() - at),
            (None, Ok(_)) => Ok(len),
            (None, Err(errno)) => Err(errno),
        })
    }

    /// One `Ring::send_fixed` of `[at, +len)` through the target's slot.
    fn send_fixed_once(
        &mut self,
        target: Target,
        at: u64,
        len: u64,
        out: &mut Option<File>,
    ) -> Option<Result<u64, Errno>> {
        let ring = self.ring.get_or_insert_with(|| Ring::new(32).unwrap());
        let file = self.sources[index(target)].fixed.as_ref()?;
        let op = match ring.send_fixed(file, at, len, out.take().unwrap()) {
            Ok(op) => op,
            Err(refused) => {
                *out = Some(refused.back);
                let _ = ring.submit();
                return None;
            }
        };
        wait_for(ring, || op.is_done());
        let done = op.finish().unwrap();
        *out = Some(done.out);
        Some(match done.sent {
            Ok(0) => panic!("a fixed send moved nothing without an error"),
            Ok(n) => Ok(n as u64),
            Err(errno) => Err(errno),
        })
    }
}
