//! The three ways a send moves bytes, each from the cursor's position up to the end
//! of the stage it is given: `sendfile(2)`; `splice(2)`, straight into a pipe or
//! through the thread's spare pipe; and a copy through the thread's bounce buffer,
//! aligned for O_DIRECT sources. Which path runs for which bytes is decided in
//! `send.rs`.

use super::direct::DirectAlignment;
use super::error::{RegionError, SendError, SendPath};
use super::pipe_pool::{self, Pipe};
use super::read::{direct_read_end, io, pread_fill, with_bounce, BOUNCE_MAX};
use nix::errno::Errno;
use nix::fcntl::{splice, SpliceFFlags};
use std::os::fd::BorrowedFd;

/// The paths, in the order they are tried.
pub(super) const ORDER: [SendPath; 3] = [SendPath::Sendfile, SendPath::Splice, SendPath::ReadWrite];

/// How many bytes each [`SendPath`] moved in one send call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathBytes {
    sendfile: u64,
    splice: u64,
    read_write: u64,
}

impl PathBytes {
    /// The bytes `path` moved.
    pub fn get(&self, path: SendPath) -> u64 {
        match path {
            SendPath::Sendfile => self.sendfile,
            SendPath::Splice => self.splice,
            SendPath::ReadWrite => self.read_write,
        }
    }

    /// The paths that moved at least one byte, fastest first.
    pub fn ran(&self) -> impl Iterator<Item = SendPath> + '_ {
        ORDER.into_iter().filter(|&path| self.get(path) > 0)
    }

    pub(super) fn add(&mut self, path: SendPath, n: u64) {
        match path {
            SendPath::Sendfile => self.sendfile += n,
            SendPath::Splice => self.splice += n,
            SendPath::ReadWrite => self.read_write += n,
        }
    }

    /// The path that moved the most bytes (the faster one on a tie), if any did.
    pub(super) fn most(&self) -> Option<SendPath> {
        ORDER
            .into_iter()
            .rev()
            .filter(|&path| self.get(path) > 0)
            .max_by_key(|&path| self.get(path))
    }
}

/// The most one `sendfile`/`splice` call is asked for (Linux caps a call at this).
const CALL_MAX: u64 = 0x7fff_f000;
/// The copy path's buffer for page-cache sources.
const COPY_CHUNK: u64 = 64 * 1024;

/// Errnos meaning "this path cannot serve this pair of fds", not "the transfer
/// failed": the next path is tried.
fn unsupported(errno: Errno) -> bool {
    matches!(errno, Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP)
}

/// How one stage of a path ended.
pub(super) enum Step {
    /// Every byte up to the stage's end went out.
    Finished,
    /// The destination would block.
    Blocked,
    /// The source had no more bytes.
    Eof,
    /// This path cannot serve these fds at the current offset (the kernel refused,
    /// or the path's pipe could not be made): another path may.
    Unsupported,
    /// A real failure.
    Failed(SendError),
}

/// Where a send stands: the next file offset, and what has gone out so far.
pub(super) struct Cursor<'a> {
    pub(super) src: BorrowedFd<'a>,
    out: BorrowedFd<'a>,
    /// The next file offset to send.
    pub(super) pos: u64,
    /// Bytes sent by this call.
    pub(super) sent: u64,
    /// The same, by the path that moved them.
    pub(super) by_path: PathBytes,
    /// The path running (or last run).
    pub(super) running: SendPath,
    /// Whether `out` is a pipe, asked once per send, when splice first needs it.
    out_is_pipe: Option<bool>,
    /// Set once `send(2)` said `ENOTSOCK`, so later writes go straight to `write(2)`.
    out_not_socket: bool,
    /// The source is O_DIRECT: splice through a grown pipe ([`Pipe::grow`]).
    pub(super) big_pipe: bool,
}

impl<'a> Cursor<'a> {
    pub(super) fn new(src: BorrowedFd<'a>, out: BorrowedFd<'a>, pos: u64) -> Cursor<'a> {
        Cursor {
            src,
            out,
            pos,
            sent: 0,
            by_path: PathBytes::default(),
            running: SendPath::Sendfile,
            out_is_pipe: None,
            out_not_socket: false,
            big_pipe: false,
        }
    }

    /// Runs `path` up to `end`; the copy path without O_DIRECT alignment (a source not
    /// known to need it).
    pub(super) fn run(&mut self, path: SendPath, end: u64) -> Step {
        match path {
            SendPath::Sendfile => self.sendfile(end),
            SendPath::Splice => self.splice(end),
            SendPath::ReadWrite => self.copy(end, None),
        }
    }

    fn advance(&mut self, n: usize, path: SendPath) {
        self.pos += n as u64;
        self.sent += n as u64;
        self.by_path.add(path, n as u64);
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
    /// source lets sendfile move its aligned blocks and then refuses a partial one.
    fn on_error(&self, path: SendPath, errno: Errno) -> Option<Step> {
        match errno {
            Errno::EINTR => None,
            Errno::EAGAIN => Some(Step::Blocked),
            errno if unsupported(errno) => Some(Step::Unsupported),
            errno => Some(self.fail(path, errno)),
        }
    }

    fn sendfile(&mut self, end: u64) -> Step {
        self.running = SendPath::Sendfile;
        while self.pos < end {
            let mut offset = self.pos as i64;
            let count = (end - self.pos).min(CALL_MAX) as usize;
            match nix::sys::sendfile::sendfile64(self.out, self.src, Some(&mut offset), count) {
                Ok(0) => return Step::Eof,
                Ok(n) => self.advance(n, SendPath::Sendfile),
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

    fn splice(&mut self, end: u64) -> Step {
        self.running = SendPath::Splice;
        let out = self.out;
        let out_is_pipe = *self.out_is_pipe.get_or_insert_with(|| {
            nix::sys::stat::fstat(out)
                .is_ok_and(|stat| stat.st_mode & libc::S_IFMT == libc::S_IFIFO)
        });
        if out_is_pipe {
            return self.splice_straight(end);
        }
        // No pipe to be had (EMFILE, ENFILE): the copy path needs no fd.
        let Ok(mut pipe) = pipe_pool::take() else {
            return Step::Unsupported;
        };
        if self.big_pipe {
            pipe.grow();
        }
        let mut held = 0;
        let step = self.splice_through(end, &pipe, &mut held);
        // Bytes still in the pipe were not sent (a resumed send reads them again from
        // the file), so that pipe must not serve another send: it is closed with them.
        if held == 0 {
            pipe_pool::give_back_empty(pipe);
        }
        step
    }

    /// Splices from the file straight into `out`, a pipe.
    fn splice_straight(&mut self, end: u64) -> Step {
        while self.pos < end {
            let mut offset = self.pos as i64;
            let count = (end - self.pos).min(CALL_MAX) as usize;
            let flags = SpliceFFlags::SPLICE_F_MOVE;
            match splice(self.src, Some(&mut offset), self.out, None, count, flags) {
                Ok(0) => return Step::Eof,
                Ok(n) => self.advance(n, SendPath::Splice),
                Err(errno) => {
                    if let Some(step) = self.on_error(SendPath::Splice, errno) {
                        return step;
                    }
                }
            }
        }
        Step::Finished
    }

    /// Splices from the file into `pipe`, then from `pipe` into `out`. `held` counts
    /// the bytes in the pipe that have not reached `out`.
    fn splice_through(&mut self, end: u64, pipe: &Pipe, held: &mut usize) -> Step {
        let flags = SpliceFFlags::SPLICE_F_MOVE;
        while self.pos < end {
            let mut offset = self.pos as i64;
            let count = (end - self.pos).min(CALL_MAX) as usize;
            *held = match splice(self.src, Some(&mut offset), &pipe.write, None, count, flags) {
                Ok(0) => return Step::Eof,
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(errno) if unsupported(errno) => return Step::Unsupported,
                Err(errno) => return self.fail(SendPath::Splice, errno),
            };
            while *held > 0 {
                match splice(&pipe.read, None, self.out, None, *held, flags) {
                    Ok(n) => {
                        *held -= n;
                        self.advance(n, SendPath::Splice);
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

    /// Copies up to `end` through this thread's bounce buffer: `pread`, then
    /// `send`/`write` from the buffer. With `align` (an O_DIRECT source) every read is
    /// of whole aligned blocks into an aligned buffer, and only the asked bytes are
    /// written. Without it, a source that refuses the read (`EINVAL`: it may be
    /// O_DIRECT) is `Unsupported`, for the caller to find out.
    pub(super) fn copy(&mut self, end: u64, align: Option<DirectAlignment>) -> Step {
        self.running = SendPath::ReadWrite;
        if self.pos >= end {
            return Step::Finished;
        }
        let (unit, buffer_align, len) = match align {
            Some(align) => {
                let unit = u64::from(align.offset);
                let span = end.div_ceil(unit) * unit - self.pos / unit * unit;
                (unit, align.buffer_align(), span.min(BOUNCE_MAX.max(unit)))
            }
            None => (1, 1, (end - self.pos).min(COPY_CHUNK)),
        };
        let copied = with_bounce(len as usize, buffer_align, |bounce| {
            self.copy_through(end, unit, bounce)
        });
        copied.unwrap_or(Step::Failed(SendError::Read {
            sent: self.sent,
            error: RegionError::Overflow {
                offset: self.pos,
                len,
            },
        }))
    }

    /// The loop of [`copy`](Cursor::copy); `unit` is 1 for page-cache sources.
    fn copy_through(&mut self, end: u64, unit: u64, bounce: &mut [u8]) -> Step {
        let direct = unit > 1;
        while self.pos < end {
            let start = self.pos / unit * unit;
            let skip = (self.pos - start) as usize;
            let read_end = (end.div_ceil(unit) * unit).min(start + bounce.len() as u64);
            let read_end = direct_read_end(read_end, unit);
            if read_end <= start {
                return Step::Eof;
            }
            let read_len = (read_end - start) as usize;
            let (got, error) = pread_fill(self.src, &mut bounce[..read_len], start, direct);
            match error {
                None => {}
                Some(Errno::EINVAL) if !direct => return Step::Unsupported,
                Some(errno) => {
                    return Step::Failed(SendError::Read {
                        sent: self.sent,
                        error: io(errno),
                    })
                }
            }
            // A short read is the file's end; the next round reads 0 there and says so.
            if got <= skip {
                return Step::Eof;
            }
            let take = (got - skip).min((end - self.pos) as usize);
            if let Some(step) = self.write_all(&bounce[skip..skip + take]) {
                return step;
            }
        }
        Step::Finished
    }

    /// Writes all of `bytes` to `out`, or says why not.
    fn write_all(&mut self, mut bytes: &[u8]) -> Option<Step> {
        while !bytes.is_empty() {
            match write_nosignal(self.out, bytes, &mut self.out_not_socket) {
                Ok(n) => {
                    self.advance(n, SendPath::ReadWrite);
                    bytes = &bytes[n..];
                }
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) => return Some(Step::Blocked),
                // The last path has no next one to pass to (an O_DIRECT destination
                // refuses an unaligned write with EINVAL): every errno is a failure.
                Err(errno) => return Some(self.fail(SendPath::ReadWrite, errno)),
            }
        }
        None
    }
}

/// `send(MSG_NOSIGNAL)` on sockets, so a hung-up reader is `EPIPE` and not a
/// process-killing `SIGPIPE`; `write` on everything else (`not_socket` remembers
/// which, so a pipe pays the refused `send` once per send, not once per write).
fn write_nosignal(
    out: BorrowedFd<'_>,
    bytes: &[u8],
    not_socket: &mut bool,
) -> Result<usize, Errno> {
    use nix::sys::socket::{send, MsgFlags};
    use std::os::fd::AsRawFd;
    if *not_socket {
        return nix::unistd::write(out, bytes);
    }
    match send(out.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
        Err(Errno::ENOTSOCK) => {
            *not_socket = true;
            nix::unistd::write(out, bytes)
        }
        other => other,
    }
}
