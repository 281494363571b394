//! Sending a [`LentRegion`] to a socket or pipe: `sendfile(2)` first, then
//! `splice(2)`, then a read+write copy, whichever the kernel lets serve; resumable
//! on non-blocking destinations.

use super::error::{SendError, SendPath};
use super::region::LentRegion;
use nix::errno::Errno;
use nix::fcntl::{splice, SpliceFFlags};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// The most one `sendfile`/`splice` call is asked for (Linux caps a call at this).
const CALL_MAX: u64 = 0x7fff_f000;
/// The copy path's buffer.
const COPY_CHUNK: u64 = 64 * 1024;

/// Where a send stands after [`LentRegion::send_to`] returns without an error.
#[derive(Debug)]
#[must_use = "a blocked send holds the rest of the region (and its loan) until resumed or dropped"]
pub enum SendProgress {
    /// Every byte of the region was sent; its loan is returned.
    Done {
        /// The region's length.
        sent: u64,
        /// The path that moved the bytes (the last one, if a fallback happened).
        path: SendPath,
    },
    /// The destination is non-blocking and full. Wait until it is writable, then
    /// resume with `rest.send_to(...)` (or drop `rest` to give up; that returns the
    /// loan).
    Blocked {
        /// Bytes sent by this call.
        sent: u64,
        /// The part not sent yet, still holding the loan.
        rest: LentRegion,
        /// The path that was running.
        path: SendPath,
    },
}

/// Errnos meaning "this path cannot serve this pair of fds", not "the transfer
/// failed": the next path is tried.
fn unsupported(errno: Errno) -> bool {
    matches!(errno, Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP)
}

/// How one step of a path ended.
enum Step {
    /// All `len` bytes from `offset` went out.
    Finished,
    /// The destination would block.
    Blocked,
    /// The source had no more bytes.
    Eof,
    /// The kernel refused this path for these fds (at the current offset).
    Unsupported,
    /// A real failure.
    Failed(SendError),
}

struct Cursor<'a> {
    src: BorrowedFd<'a>,
    out: BorrowedFd<'a>,
    /// The next file offset to send.
    pos: u64,
    end: u64,
    /// Bytes sent by this call.
    sent: u64,
}

impl Cursor<'_> {
    fn left(&self) -> u64 {
        self.end - self.pos
    }

    fn advance(&mut self, n: usize) {
        self.pos += n as u64;
        self.sent += n as u64;
    }

    fn fail(&self, path: SendPath, errno: Errno) -> Step {
        let sent = self.sent;
        Step::Failed(match errno {
            Errno::EPIPE | Errno::ECONNRESET => SendError::PeerGone { sent, errno },
            errno => SendError::Io { sent, path, errno },
        })
    }

    /// What an errno means for the running path. "Cannot serve" errnos pass the
    /// transfer to the next path at the current offset, even midway: an O_DIRECT
    /// source lets sendfile move its aligned blocks and then refuses the partial last
    /// one.
    fn on_error(&self, path: SendPath, errno: Errno) -> Option<Step> {
        match errno {
            Errno::EINTR => None,
            Errno::EAGAIN => Some(Step::Blocked),
            errno if unsupported(errno) => Some(Step::Unsupported),
            errno => Some(self.fail(path, errno)),
        }
    }

    fn sendfile(&mut self) -> Step {
        while self.left() > 0 {
            let mut offset = self.pos as i64;
            let count = self.left().min(CALL_MAX) as usize;
            match nix::sys::sendfile::sendfile64(self.out, self.src, Some(&mut offset), count) {
                Ok(0) => return Step::Eof,
                Ok(n) => {
                    self.advance(n);
                }
                // At offsets past the filesystem's largest file size sendfile says
                // EOVERFLOW where a read says end of file: the next path reads it so.
                Err(Errno::EOVERFLOW) => return Step::Unsupported,
                Err(errno) => {
                    if let Some(step) = self.on_error(SendPath::Sendfile, errno) {
                        return step;
                    }
                }
            }
        }
        Step::Finished
    }

    fn splice(&mut self) -> Step {
        let out_is_pipe = nix::sys::stat::fstat(self.out)
            .is_ok_and(|stat| stat.st_mode & libc::S_IFMT == libc::S_IFIFO);
        if out_is_pipe {
            return self.splice_into(None);
        }
        match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(pipe) => self.splice_into(Some(pipe)),
            Err(errno) => self.fail(SendPath::Splice, errno),
        }
    }

    /// Splices straight into `out` (a pipe), or through `via` (a private pipe) when
    /// `out` is anything else. Bytes left in `via` when the destination blocks or
    /// fails are not counted as sent and vanish with the pipe; the resumed send
    /// reads them again from the file.
    fn splice_into(&mut self, via: Option<(OwnedFd, OwnedFd)>) -> Step {
        while self.left() > 0 {
            let mut offset = self.pos as i64;
            let count = self.left().min(CALL_MAX) as usize;
            let Some((pipe_read, pipe_write)) = &via else {
                match splice(
                    self.src,
                    Some(&mut offset),
                    self.out,
                    None,
                    count,
                    SpliceFFlags::SPLICE_F_MOVE,
                ) {
                    Ok(0) => return Step::Eof,
                    Ok(n) => {
                        self.advance(n);
                    }
                    Err(errno) => {
                        if let Some(step) = self.on_error(SendPath::Splice, errno) {
                            return step;
                        }
                    }
                }
                continue;
            };
            let flags = SpliceFFlags::SPLICE_F_MOVE;
            let filled = match splice(self.src, Some(&mut offset), pipe_write, None, count, flags) {
                Ok(0) => return Step::Eof,
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(errno) if unsupported(errno) => return Step::Unsupported,
                Err(errno) => return self.fail(SendPath::Splice, errno),
            };
            let mut drained = 0;
            while drained < filled {
                match splice(pipe_read, None, self.out, None, filled - drained, flags) {
                    Ok(n) => {
                        drained += n;
                        self.advance(n);
                    }
                    Err(errno) => {
                        if let Some(step) = self.on_error(SendPath::Splice, errno) {
                            return step;
                        }
                    }
                }
            }
        }
        Step::Finished
    }

    fn read_write(&mut self, region: &LentRegion) -> Step {
        let mut buf = vec![0; self.left().min(COPY_CHUNK) as usize];
        while self.left() > 0 {
            let at = self.pos - region.offset();
            let want = self.left().min(buf.len() as u64) as usize;
            let filled = match region.read_at(at, &mut buf[..want]) {
                Ok(0) => return Step::Eof,
                Ok(n) => n,
                Err(error) => {
                    return Step::Failed(SendError::Read {
                        sent: self.sent,
                        error,
                    })
                }
            };
            let mut written = 0;
            while written < filled {
                match write_nosignal(self.out, &buf[written..filled]) {
                    Ok(n) => {
                        written += n;
                        self.advance(n);
                    }
                    Err(errno) => match self.on_error(SendPath::ReadWrite, errno) {
                        None => {}
                        // The last path has no next one to pass to (an O_DIRECT
                        // destination refuses an unaligned write with EINVAL).
                        Some(Step::Unsupported) => return self.fail(SendPath::ReadWrite, errno),
                        Some(step) => return step,
                    },
                }
            }
        }
        Step::Finished
    }
}

/// `send(MSG_NOSIGNAL)` on sockets, so a hung-up reader is `EPIPE` and not a
/// process-killing `SIGPIPE`; `write` on everything else.
fn write_nosignal(out: BorrowedFd<'_>, bytes: &[u8]) -> Result<usize, Errno> {
    use nix::sys::socket::{send, MsgFlags};
    use std::os::fd::AsRawFd;
    match send(out.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
        Err(Errno::ENOTSOCK) => nix::unistd::write(out, bytes),
        other => other,
    }
}

impl LentRegion {
    /// Sends the region to `out` (a socket, a pipe, or any writable fd), starting
    /// with `sendfile`.
    ///
    /// Blocking destinations get everything or an error. Non-blocking ones may return
    /// [`SendProgress::Blocked`] with the rest of the region to resume once `out` is
    /// writable. The region's loan is returned however this ends, except inside
    /// `Blocked`, which hands it back to the caller.
    ///
    /// `sendfile` and `splice` raise `SIGPIPE` on a hung-up socket or pipe like
    /// `write` does. Rust programs ignore `SIGPIPE` from the start (std sets it to
    /// `SIG_IGN` before `main`), so it shows as [`SendError::PeerGone`]; a program that
    /// restored the default must ignore it again before sending.
    pub fn send_to(self, out: impl AsFd) -> Result<SendProgress, SendError> {
        self.send_via(out, SendPath::Sendfile)
    }

    /// As [`send_to`](LentRegion::send_to), starting at `first` in the order
    /// sendfile → splice → read+write: for destinations known to refuse the faster
    /// paths, and for testing each path.
    pub fn send_via(self, out: impl AsFd, first: SendPath) -> Result<SendProgress, SendError> {
        let out = out.as_fd();
        let order = [SendPath::Sendfile, SendPath::Splice, SendPath::ReadWrite];
        let mut cursor = Cursor {
            src: self.as_fd(),
            out,
            pos: self.offset(),
            end: self.end(),
            sent: 0,
        };
        let start = order.iter().position(|&path| path == first).unwrap_or(0);
        for &path in &order[start..] {
            let step = match path {
                SendPath::Sendfile => cursor.sendfile(),
                SendPath::Splice => cursor.splice(),
                SendPath::ReadWrite => cursor.read_write(&self),
            };
            let sent = cursor.sent;
            match step {
                Step::Unsupported => continue,
                Step::Finished => return Ok(SendProgress::Done { sent, path }),
                Step::Blocked => {
                    return Ok(match self.advance(sent) {
                        Some(rest) => SendProgress::Blocked { sent, rest, path },
                        None => SendProgress::Done { sent, path },
                    })
                }
                Step::Eof => {
                    return Err(SendError::SourceEnded {
                        sent,
                        wanted: self.len(),
                    })
                }
                Step::Failed(error) => return Err(error),
            }
        }
        // The copy path never reports Unsupported, so the loop always returns.
        unreachable!("fdlend: the read+write path serves every writable fd")
    }
}
