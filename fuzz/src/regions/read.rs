//! Reads and sends of a live region, each predicted from the region's range, the
//! file's length and the O_DIRECT alignment statx reported, and its bytes compared
//! with a plain `pread` of the same file.

use super::env::{BUF_MAX, BUF_SHIFT, FILE_LEN};
use super::pool::{Held, Pool};
use super::{Buf, Fd, First, Num, ReadKind};
use fdlend::io::{
    DirectAlignment, LentRegion, Misaligned, PathBytes, RegionError, SendError, SendPath,
    SendProgress,
};
use nix::fcntl::OFlag;
use std::fs::File;
use std::io::{ErrorKind, Read};

/// What the caller's buffer holds before a read: bytes the read must not reach stay so.
const UNTOUCHED: u8 = 0xc3;
/// The most one read of the pipe takes (its default capacity).
const PIPE_CHUNK: usize = 64 * 1024;

/// The bytes of the file a read of `want` bytes from `pos` finds: fewer past its end.
fn in_file(pos: u64, want: u64) -> u64 {
    FILE_LEN.saturating_sub(pos).min(want)
}

/// What a positional read of `size` bytes at `at` into a buffer at `addr` must
/// return (the bytes read), for a region `offset + len`.
struct Request {
    offset: u64,
    len: u64,
    at: u64,
    size: u64,
    addr: u64,
}

impl Request {
    fn expect(&self, exact: bool, no_copy: Option<DirectAlignment>) -> Result<u64, RegionError> {
        let Request {
            offset,
            len,
            at,
            size,
            addr,
        } = *self;
        if exact && at.checked_add(size).is_none_or(|end| end > len) {
            return Err(RegionError::OutOfRegion {
                at: at.saturating_add(size),
                len,
            });
        }
        if at > len {
            return Err(RegionError::OutOfRegion { at, len });
        }
        let clipped = (len - at).min(size);
        let pos = offset + at;
        if let Some(align) = no_copy {
            let rules = [
                (Misaligned::Offset, pos, align.offset),
                (Misaligned::Length, clipped, align.offset),
                (Misaligned::Buffer, addr, align.memory),
            ];
            for (what, value, align) in rules {
                if value % u64::from(align) != 0 {
                    return Err(RegionError::Misaligned { what, value, align });
                }
            }
        }
        let read = in_file(pos, clipped);
        if exact && read < size {
            return Err(RegionError::ShortRead { read, wanted: size });
        }
        Ok(read)
    }
}

impl Pool<'_> {
    pub(super) fn read(&mut self, choice: u8, kind: ReadKind, at: Num, buf: Buf) {
        let Some(i) = self.pick_io(choice) else {
            return;
        };
        let Held { region, fd } = &self.held[i];
        let (offset, len) = (region.offset(), region.len());
        let at = at.value(len);
        let size = (buf.len.value(len.saturating_sub(at)) % (BUF_MAX as u64 + 1)) as usize;
        let shift = buf.shift.value(BUF_SHIFT);
        let mut whole = self.env.buf.borrow_mut();
        // One guard byte each side of the caller's buffer.
        whole[shift.saturating_sub(1)..shift + size + 1].fill(UNTOUCHED);
        let dst = &mut whole[shift..shift + size];
        let request = Request {
            offset,
            len,
            at,
            size: size as u64,
            addr: dst.as_ptr() as u64,
        };
        let no_copy = (*fd == Fd::Direct).then_some(self.env.align);
        let (want, got) = match kind {
            ReadKind::At => (
                request.expect(false, None),
                region.read_at(at, dst).map(|n| n as u64),
            ),
            ReadKind::ExactAt => (
                request.expect(true, None),
                region.read_exact_at(at, dst).map(|()| size as u64),
            ),
            ReadKind::DirectAt => (
                request.expect(false, no_copy),
                region.read_direct_at(at, dst).map(|n| n as u64),
            ),
            ReadKind::ExactDirectAt => (
                request.expect(true, no_copy),
                region.read_exact_direct_at(at, dst).map(|()| size as u64),
            ),
        };
        assert_eq!(
            got, want,
            "{kind:?} of {size} bytes at {at} (buffer +{shift}) of {region:?}"
        );
        let (filled, reached) = match want {
            Ok(read) => (read as usize, true),
            Err(RegionError::ShortRead { read, .. }) => (read as usize, true),
            Err(_) => (0, false),
        };
        let dst = &whole[shift..shift + size];
        if filled > 0 {
            let pos = offset + at;
            assert!(
                self.env.in_file_at(pos, &dst[..filled]),
                "{kind:?} of {size} at {pos}: wrong bytes"
            );
        }
        // Past what was read: nothing is written past the region, nor anywhere when
        // the request was refused. An O_DIRECT read into the caller's own buffer may
        // have the kernel write the rest of the block holding end of file.
        let clipped = if reached {
            (len - at).min(size as u64) as usize
        } else {
            0
        };
        let kernel_may_write = *fd == Fd::Direct && reached;
        let clean_from = if kernel_may_write { clipped } else { filled };
        assert!(
            all_untouched(&dst[clean_from..]),
            "{kind:?} wrote past byte {clean_from} of a {size}-byte buffer"
        );
        let guards = [shift.checked_sub(1), Some(shift + size)];
        for guard in guards.into_iter().flatten() {
            assert_eq!(
                whole[guard], UNTOUCHED,
                "{kind:?} wrote outside the caller's buffer"
            );
        }
    }

    pub(super) fn read_to_end(&mut self, choice: u8, prefix: u8) {
        let Some(i) = self.pick_io(choice) else {
            return;
        };
        let region = &self.held[i].region;
        let mut out = self.env.sink.borrow_mut();
        out.clear();
        out.resize(usize::from(prefix), UNTOUCHED);
        let got = region.read_to_end(&mut out);
        let read = in_file(region.offset(), region.len());
        assert_eq!(got, Ok(read as usize), "read_to_end of {region:?}");
        assert_eq!(out.len(), usize::from(prefix) + read as usize);
        let (before, bytes) = out.split_at(usize::from(prefix));
        assert!(
            all_untouched(before),
            "read_to_end overwrote what was there"
        );
        assert!(
            self.env.in_file_at(region.offset(), bytes),
            "read_to_end of {region:?}: wrong bytes"
        );
    }

    pub(super) fn read_to_vec(&mut self, choice: u8) {
        let Some(i) = self.pick_io(choice) else {
            return;
        };
        let region = &self.held[i].region;
        let read = in_file(region.offset(), region.len());
        match region.read_to_vec() {
            Ok(bytes) => {
                assert_eq!(
                    read,
                    region.len(),
                    "read_to_vec of {region:?} read past end of file"
                );
                assert!(
                    self.env.in_file_at(region.offset(), &bytes),
                    "read_to_vec of {region:?}: wrong bytes"
                );
            }
            Err(error) => assert_eq!(
                error,
                RegionError::ShortRead {
                    read,
                    wanted: region.len()
                },
                "read_to_vec of {region:?}"
            ),
        }
    }

    /// Sends into a non-blocking pipe, draining it and resuming each time the send
    /// blocks: every call's `sent` must be what came out of the pipe, and all of it
    /// the file's bytes of the region (`SourceEnded` if the file ends first).
    pub(super) fn send(&mut self, choice: u8, first: First) {
        let Some(i) = self.pick_io(choice) else {
            return;
        };
        let Held { region, fd } = self.held.swap_remove(i);
        let first = match first {
            First::Sendfile => SendPath::Sendfile,
            First::Splice => SendPath::Splice,
            First::ReadWrite => SendPath::ReadWrite,
        };
        let (offset, len) = (region.offset(), region.len());
        let (pipe_read, pipe_write) =
            nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).expect("pipe2");
        let mut pipe_read = File::from(pipe_read);
        let mut out = self.env.sink.borrow_mut();
        out.clear();
        let mut current: LentRegion = region;
        let ended = loop {
            let (at, left) = (current.offset(), current.len());
            let result = current.send_via(&pipe_write, first);
            let drained = drain(&mut pipe_read, &mut out);
            let sent = match &result {
                Ok(SendProgress::Done { sent, .. } | SendProgress::Blocked { sent, .. }) => *sent,
                Err(error) => error.sent(),
            };
            assert_eq!(drained as u64, sent, "{result:?}: bytes in the pipe");
            if let Ok(
                SendProgress::Done {
                    sent,
                    path,
                    by_path,
                }
                | SendProgress::Blocked {
                    sent,
                    path,
                    by_path,
                    ..
                },
            ) = &result
            {
                check_paths(fd, first, *path, by_path, *sent);
            }
            match result {
                Ok(SendProgress::Done { sent, .. }) => {
                    assert_eq!(sent, left);
                    break false;
                }
                Ok(SendProgress::Blocked { sent, rest, .. }) => {
                    assert!(sent < left, "blocked with nothing left");
                    assert_eq!((rest.offset(), rest.len()), (at + sent, left - sent));
                    // The pipe was full; drained, it takes more, so no round is empty.
                    assert!(sent > 0, "a send into an empty pipe made no progress");
                    current = rest;
                }
                Err(SendError::SourceEnded { sent, wanted }) => {
                    assert_eq!(wanted, left);
                    assert_eq!(sent, in_file(at, left), "SourceEnded before end of file");
                    break true;
                }
                Err(error) => panic!("send of {offset}+{len} from {first:?}: {error}"),
            }
        };
        let read = in_file(offset, len);
        assert_eq!(
            ended,
            read < len,
            "send of {offset}+{len}: ended early or late"
        );
        assert_eq!(out.len() as u64, read, "send of {offset}+{len}");
        assert!(
            self.env.in_file_at(offset, &out),
            "send of {offset}+{len}: wrong bytes"
        );
    }
}

/// A buffered file feeds a pipe by the path asked for; an O_DIRECT one may use later
/// paths too (its ragged edges go by copy, its middle by splice), never an earlier
/// one. Every byte sent is counted once, by the path that moved it, and `path` is
/// the one that moved most.
fn check_paths(fd: Fd, first: SendPath, path: SendPath, by_path: &PathBytes, sent: u64) {
    let order = |path| {
        [SendPath::Sendfile, SendPath::Splice, SendPath::ReadWrite]
            .iter()
            .position(|&p| p == path)
    };
    let counted: u64 = by_path.ran().map(|path| by_path.get(path)).sum();
    assert_eq!(counted, sent, "{by_path:?} for {sent} bytes sent");
    if sent > 0 {
        assert!(
            by_path
                .ran()
                .all(|ran| by_path.get(ran) <= by_path.get(path)),
            "{path:?} reported, {by_path:?} moved"
        );
    }
    match fd {
        Fd::Buffered => assert_eq!(by_path.get(first), sent, "a buffered file fell back"),
        Fd::Direct => assert!(
            by_path.ran().all(|ran| order(ran) >= order(first)),
            "{by_path:?}: a path before {first:?} ran"
        ),
    }
}

/// Everything the pipe holds, appended to `out`; returns how many bytes.
fn drain(pipe: &mut File, out: &mut Vec<u8>) -> usize {
    let start = out.len();
    loop {
        let filled = out.len();
        out.resize(filled + PIPE_CHUNK, 0);
        let result = pipe.read(&mut out[filled..]);
        out.truncate(filled + *result.as_ref().unwrap_or(&0));
        match result {
            Ok(0) => unreachable!("the write end is open"),
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::WouldBlock => break,
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => panic!("reading the pipe: {error}"),
        }
    }
    out.len() - start
}

/// True when no byte of `bytes` was written (all still [`UNTOUCHED`]). Compares
/// slices, not bytes one by one: libFuzzer traces every byte comparison.
fn all_untouched(bytes: &[u8]) -> bool {
    static CLEAN: [u8; 4096] = [UNTOUCHED; 4096];
    bytes
        .chunks(CLEAN.len())
        .all(|chunk| chunk == &CLEAN[..chunk.len()])
}
