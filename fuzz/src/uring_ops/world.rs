//! The real ring, files and handles of one `uring_ops` input, and the checks.

use super::source::{file_byte, stream_byte, Source, FILE_LEN, PIPE_ROOM};
use super::{Op, Target};
use fdlend::io::uring::{FixedReadOp, ReadOp, Ring};
use fdlend::io::LentRegion;
use fdlend::Closing;
use nix::errno::Errno;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Rings dropped with ops in flight per process: each leaks a lender's fd.
const LEAK_BUDGET: usize = 16;
static LEAKS: AtomicUsize = AtomicUsize::new(0);

pub(super) enum Handle {
    Plain(ReadOp<Vec<u8>>),
    Fixed(FixedReadOp<Vec<u8>>),
}

/// An op the world pushed and still has a handle to.
struct Pending {
    target: Target,
    offset: u64,
    len: usize,
    /// The target was cancel-then-closed while this op was alive (its source was
    /// replaced: its bytes no longer count against the current one).
    cancelled: bool,
    handle: Handle,
}

/// One input's world.
pub struct World {
    pub(super) ring: Option<Ring>,
    pub(super) sources: Vec<Source>,
    pending: Vec<Pending>,
    /// Closes started by cancel-then-close, with the ops that still hold loans.
    closing: Vec<Closing>,
    pushed: usize,
    finished: usize,
    abandoned: usize,
}

impl Default for World {
    fn default() -> World {
        World {
            ring: None,
            sources: [Target::File, Target::PipeA, Target::PipeB, Target::Direct]
                .into_iter()
                .map(Source::new)
                .collect(),
            pending: Vec::new(),
            closing: Vec::new(),
            pushed: 0,
            finished: 0,
            abandoned: 0,
        }
    }
}

pub(super) fn index(target: Target) -> usize {
    match target {
        Target::File => 0,
        Target::PipeA => 1,
        Target::PipeB => 2,
        Target::Direct => 3,
    }
}

impl World {
    pub(super) fn ring(&mut self) -> &mut Ring {
        self.ring.get_or_insert_with(|| Ring::new(32).unwrap())
    }

    pub fn step(&mut self, op: Op) {
        match op {
            Op::Read {
                target,
                fixed,
                offset,
                len,
            } => self.read(target, fixed, u64::from(offset), usize::from(len) + 1),
            Op::Submit => {
                self.ring().submit().unwrap();
            }
            Op::Reap => {
                self.ring().submit().unwrap();
                self.ring().reap(|cqe| panic!("foreign CQE {cqe:?}"));
            }
            Op::Write { pipe, len } => {
                let source = &mut self.sources[1 + usize::from(pipe)];
                let len = u64::from(len) + 1;
                if source.written - source.read + len <= PIPE_ROOM {
                    let bytes: Vec<u8> = (source.written..source.written + len)
                        .map(stream_byte)
                        .collect();
                    source.writer.as_mut().unwrap().write_all(&bytes).unwrap();
                    source.written += len;
                }
            }
            Op::Finish { op } => {
                if !self.pending.is_empty() {
                    let at = usize::from(op) % self.pending.len();
                    let pending = self.pending.swap_remove(at);
                    if let Some(pending) = self.finish(pending) {
                        self.pending.push(pending);
                    }
                }
            }
            Op::DropOp { op } => {
                if !self.pending.is_empty() {
                    let at = usize::from(op) % self.pending.len();
                    let dropped = self.pending.swap_remove(at);
                    self.sources[index(dropped.target)].abandoned_len += dropped.len as u64;
                    drop(dropped);
                    self.abandoned += 1;
                }
            }
            Op::Register { target } => {
                self.register(target);
            }
            Op::Release { target } => {
                if let Some(file) = self.sources[index(target)].fixed.take() {
                    self.ring().release(file);
                }
            }
            Op::Send {
                direct,
                fixed,
                offset,
                len,
                short,
            } => {
                let target = if direct { Target::Direct } else { Target::File };
                let (offset, len) = (u64::from(offset), u64::from(len) + 1);
                self.send(target, fixed, offset, len, short);
            }
            Op::CancelThenClose { target } => self.cancel_then_close(target),
            Op::Drain => {
                self.drain();
                self.check_counts();
            }
            Op::DropRing { leak } => {
                let leak = leak && LEAKS.load(Ordering::Relaxed) < LEAK_BUDGET;
                if !leak {
                    self.drain();
                } else if self.ring.as_ref().is_some_and(|ring| ring.in_flight() > 0) {
                    LEAKS.fetch_add(1, Ordering::Relaxed);
                    for source in &mut self.sources {
                        source.tainted = true;
                    }
                }
                for source in &mut self.sources {
                    drop(source.fixed.take());
                }
                self.ring = None;
                // Done ops finish; the others can never complete now: abandoned.
                for pending in std::mem::take(&mut self.pending) {
                    if self.finish(pending).is_some() {
                        self.abandoned += 1;
                    }
                }
            }
        }
    }

    pub(super) fn register(&mut self, target: Target) -> bool {
        let i = index(target);
        if self.sources[i].fixed.is_some() {
            return true;
        }
        let Ok(loan) = self.sources[i].lender.loan() else {
            return false;
        };
        match self.ring().register(loan) {
            Ok(file) => {
                self.sources[i].fixed = Some(file);
                true
            }
            Err(refused) => panic!("register refused: {refused}"),
        }
    }

    fn read(&mut self, target: Target, fixed: bool, offset: u64, len: usize) {
        if target == Target::Direct {
            return;
        }
        let offset = match target {
            Target::File => offset % (FILE_LEN as u64 + 64),
            _ => 0,
        };
        if self.ring().in_flight() >= 24 {
            return; // keep the queue and the pipes' waiters few
        }
        let handle = if fixed {
            if !self.register(target) {
                return;
            }
            let ring = self.ring.as_mut().unwrap();
            let file = self.sources[index(target)].fixed.as_ref().unwrap();
            match ring.read_fixed(file, offset, vec![0; len]) {
                Ok(op) => Handle::Fixed(op),
                Err(refused) => {
                    let _ = ring.submit();
                    assert_eq!(refused.back.len(), len, "the buffer comes back");
                    return;
                }
            }
        } else {
            let Ok(loan) = self.sources[index(target)].lender.loan() else {
                return;
            };
            let region = LentRegion::new(loan, offset, len as u64).unwrap();
            match self.ring().read(region, vec![0; len]) {
                Ok(op) => Handle::Plain(op),
                Err(full) => {
                    assert_eq!(full.0 .0.offset(), offset, "the region comes back");
                    let _ = self.ring().submit();
                    return;
                }
            }
        };
        self.pushed += 1;
        self.pending.push(Pending {
            target,
            offset,
            len,
            cancelled: false,
            handle,
        });
    }

    /// Checks a finished op's result; hands the op back if it is not done.
    fn finish(&mut self, pending: Pending) -> Option<Pending> {
        let (buf, result) = match pending.handle {
            Handle::Plain(op) => match op.finish() {
                Ok(done) => {
                    assert_eq!(done.region.offset(), pending.offset);
                    (done.buf, done.result)
                }
                Err(op) => {
                    return Some(Pending {
                        handle: Handle::Plain(op),
                        ..pending
                    })
                }
            },
            Handle::Fixed(op) => match op.finish() {
                Ok(done) => (done.buf, done.result),
                Err(op) => {
                    return Some(Pending {
                        handle: Handle::Fixed(op),
                        ..pending
                    })
                }
            },
        };
        self.finished += 1;
        let n = match result {
            Err(Errno::ECANCELED) if pending.cancelled => return None,
            Err(errno) => panic!("{:?} read failed: {errno}", pending.target),
            Ok(n) => n,
        };
        assert!(n <= pending.len);
        if pending.target == Target::File {
            let start = pending.offset as usize;
            let want = pending.len.min(FILE_LEN.saturating_sub(start));
            assert_eq!(n, want, "file read at {start}");
            assert!(buf[..n]
                .iter()
                .enumerate()
                .all(|(k, &b)| b == file_byte(start + k)));
        } else {
            assert!(n > 0, "a pipe with a writer never reads EOF");
            assert!(
                buf[..n]
                    .windows(2)
                    .all(|w| w[1] == ((u16::from(w[0]) + 1) % 251) as u8),
                "a pipe read is a contiguous piece of the stream"
            );
            if !pending.cancelled {
                let source = &mut self.sources[index(pending.target)];
                source.read += n as u64;
                assert!(source.read <= source.written, "read more than was written");
            }
        }
        None
    }

    fn cancel_then_close(&mut self, target: Target) {
        let i = index(target);
        for pending in &mut self.pending {
            if pending.target == target {
                pending.cancelled = true;
            }
        }
        drop(self.sources[i].fixed.take());
        let fresh = Source::new(target);
        let old = std::mem::replace(&mut self.sources[i], fresh);
        let tainted = old.tainted;
        let ring = self.ring.get_or_insert_with(|| Ring::new(32).unwrap());
        let Ok((_, closing)) = ring.cancel_then_close(old.lender, |cqe| panic!("{cqe:?}")) else {
            panic!("this thread owns one ring only");
        };
        drop(old.writer);
        if !tainted {
            self.closing.push(closing);
        }
    }

    /// Feeds every pipe what its waiting reads may take, then reaps until the ring
    /// has nothing in flight.
    fn drain(&mut self) {
        let Some(ring) = self.ring.as_mut() else {
            return;
        };
        for source in self.sources.iter_mut().filter(|s| s.writer.is_some()) {
            let want: u64 = self
                .pending
                .iter()
                .filter(|p| p.target == source.target && !p.cancelled)
                .map(|p| p.len as u64)
                .sum::<u64>()
                + std::mem::take(&mut source.abandoned_len);
            let bytes: Vec<u8> = (source.written..source.written + want)
                .map(stream_byte)
                .collect();
            source.writer.as_mut().unwrap().write_all(&bytes).unwrap();
            source.written += want;
        }
        while ring.in_flight() > 0 {
            // libFuzzer's timeout alarm (SIGALRM) interrupts waits: retry.
            match ring.submit_and_wait(1) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                other => {
                    other.unwrap();
                }
            }
            ring.reap(|cqe| panic!("foreign CQE {cqe:?}"));
        }
        let pending = std::mem::take(&mut self.pending);
        for p in pending {
            let back = self.finish(p);
            assert!(
                back.is_none(),
                "an op is not done though nothing is in flight"
            );
        }
        // What no read took is the stream's tail: read it, so pipes never fill.
        for source in self.sources.iter_mut().filter(|s| s.writer.is_some()) {
            source.read_tail();
        }
    }

    /// With nothing in flight: each lender lends exactly what the world holds.
    fn check_counts(&self) {
        for source in &self.sources {
            if source.tainted {
                continue;
            }
            let fixed = usize::from(source.fixed.is_some());
            assert_eq!(
                source.lender.outstanding(),
                fixed,
                "{:?}: loans other than the fixed slot's after a drain",
                source.target
            );
        }
        for closing in &self.closing {
            assert!(
                closing.is_closed(),
                "a cancelled file is not closed after a drain"
            );
        }
    }

    /// Ends the input: everything completes, is released and closes.
    pub fn teardown(mut self) {
        self.drain();
        self.check_counts();
        for source in &mut self.sources {
            drop(source.fixed.take());
        }
        if let Some(ring) = self.ring.as_mut() {
            ring.reap(|cqe| panic!("{cqe:?}"));
        }
        assert_eq!(
            self.pushed,
            self.finished + self.abandoned,
            "an op vanished"
        );
        for source in std::mem::take(&mut self.sources) {
            if source.tainted {
                continue; // its leaked loans keep it open: the price of safety
            }
            assert_eq!(source.lender.outstanding(), 0, "{:?}", source.target);
            assert!(source.lender.try_close().is_ok());
        }
        self.ring = None;
    }
}
