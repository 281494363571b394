//! Ring sends of a region to a socket or pipe: two linked splices through the op's
//! private pipe, or for an O_DIRECT file an aligned read and a write of what it got
//! (bounce.rs). Each parks what the kernel touches in the table.

use super::bounce::{write_what_was_read, Bounce, Pipe, ReadFrom};
use super::handle::{result, Handle, QueueFull};
use super::ring::Ring;
use super::table::FileId;
use crate::io::direct::{known_direct, learn_direct};
use crate::io::region::LentRegion;
use io_uring::{opcode, squeue, types};
use nix::errno::Errno;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd};

/// A send of (the start of) a region to a socket or pipe, in flight. See
/// [`Ring::send`].
pub struct SendOp<O: AsFd + 'static> {
    handle: Path<O>,
}

enum Path<O: 'static> {
    /// Region, destination, pipe, the bytes the fill asks for.
    Splice(Handle<(LentRegion, O, Pipe, u32)>),
    Bounce(Handle<(LentRegion, O, Bounce)>),
}

/// A finished send.
#[derive(Debug)]
pub struct SendDone<O> {
    /// The destination, handed back.
    pub out: O,
    /// Bytes of the region moved from the file into the op's pipe (or bounce
    /// buffer), or why not.
    pub filled: Result<usize, Errno>,
    /// Bytes that reached `out`, or why not (`ECANCELED` when the fill came up
    /// short or was cancelled).
    pub sent: Result<usize, Errno>,
    /// What is left to send (its loan still counted): push it next. `None` when
    /// all of it went, or when nothing more can go: the fill came up short (the
    /// file ends inside the region) or failed, which a retry would meet again.
    /// After a cancel (`filled` is `ECANCELED`) or a failed write to `out` the
    /// region comes back untouched; after the first splice of an O_DIRECT file
    /// refused its range (`EINVAL`) too, and the next send of it goes through an
    /// aligned bounce buffer.
    pub rest: Option<LentRegion>,
}

/// What is left of `region` after a send that asked for `asked` bytes.
fn rest_after(
    region: LentRegion,
    filled: Result<usize, Errno>,
    asked: usize,
    sent: Result<usize, Errno>,
) -> Option<LentRegion> {
    match (sent, filled) {
        (Ok(n), _) => region.advance(n as u64),
        (Err(_), Err(Errno::ECANCELED)) => Some(region),
        (Err(_), Ok(n)) if n == asked => Some(region),
        _ => None,
    }
}

impl<O: AsFd + 'static> SendOp<O> {
    /// True once both of its CQEs have been reaped.
    pub fn is_done(&self) -> bool {
        match &self.handle {
            Path::Splice(handle) => handle.is_done(),
            Path::Bounce(handle) => handle.is_done(),
        }
    }

    /// The result, once both CQEs have been reaped; the op back otherwise.
    pub fn finish(self) -> Result<SendDone<O>, SendOp<O>> {
        let (region, out, filled, asked, sent) = match &self.handle {
            Path::Splice(handle) => match handle.take() {
                Some(((region, out, _pipe, asked), results)) => {
                    let filled = result(results[0]);
                    (region, out, filled, asked as usize, result(results[1]))
                }
                None => return Err(self),
            },
            Path::Bounce(handle) => match handle.take() {
                Some(((region, out, bounce), results)) => {
                    let filled = bounce.filled(results[0]);
                    (region, out, filled, bounce.asked(), result(results[1]))
                }
                None => return Err(self),
            },
        };
        let rest = if filled == Err(Errno::EINVAL) && refused_as_direct(&region) {
            Some(region)
        } else {
            rest_after(region, filled, asked, sent)
        };
        Ok(SendDone {
            out,
            filled,
            sent,
            rest,
        })
    }
}

/// True if `region`'s file is O_DIRECT (now remembered on this thread, so its next
/// send bounces).
fn refused_as_direct(region: &LentRegion) -> bool {
    matches!(
        learn_direct(region.loan().ticket(), region.loan().as_fd()),
        Ok(Some(_))
    )
}

impl<O: AsFd + 'static> fmt::Debug for SendOp<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendOp").finish_non_exhaustive()
    }
}

/// Why [`Ring::send`] pushed nothing; the region and destination come back.
#[derive(Debug)]
pub enum SendRefused<O> {
    /// The submission queue had no room for two entries.
    QueueFull {
        /// The region, untouched.
        region: LentRegion,
        /// The destination, untouched.
        out: O,
    },
    /// The op's private pipe could not be made (`EMFILE`, ...).
    Pipe {
        /// `pipe2`'s errno.
        errno: Errno,
        /// The region, untouched.
        region: LentRegion,
        /// The destination, untouched.
        out: O,
    },
}

impl<O> fmt::Display for SendRefused<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendRefused::QueueFull { .. } => f.write_str(
                "the io_uring submission queue has no room for a send's two entries; submit, then push again",
            ),
            SendRefused::Pipe { errno, .. } => {
                write!(f, "cannot make the send's pipe: {}; free some fds", errno.desc())
            }
        }
    }
}

impl<O: fmt::Debug> std::error::Error for SendRefused<O> {}

impl Ring {
    /// Pushes a send of the region's first 64 KiB (less a page's worth for an
    /// unaligned start, less when the kernel gave the op's pipe fewer pages, or
    /// less at its end) to `out`: two linked splices, file → a private pipe →
    /// `out`. The op owns `region`, `out` and the pipe until both CQEs are reaped;
    /// [`SendDone::rest`] is what to push next.
    ///
    /// An O_DIRECT file (once known to be one on this thread: see
    /// [`SendDone::rest`]) is sent through an aligned buffer instead: a read of
    /// the aligned span, then a write of the region's bytes, pushed when the
    /// read's CQE is reaped (keep submitting until the op is done).
    pub fn send<O: AsFd + 'static>(
        &mut self,
        region: LentRegion,
        out: O,
    ) -> Result<SendOp<O>, SendRefused<O>> {
        let file = FileId::of(region.loan());
        if let Some(align) = known_direct(region.loan().ticket()) {
            if let Some(bounce) = Bounce::new(region.offset(), region.len(), align) {
                return self.send_bounced(region, out, bounce, file);
            }
        }
        let pipe = match Pipe::new() {
            Ok(pipe) => pipe,
            Err(errno) => return Err(SendRefused::Pipe { errno, region, out }),
        };
        let len = pipe.fill_len(region.offset(), region.len());
        let key = self
            .push(
                (region, out, pipe, len),
                None,
                |(region, out, pipe, len)| {
                    let (file, pipe_in) = (
                        types::Fd(region.as_raw_fd()),
                        types::Fd(pipe.write.as_raw_fd()),
                    );
                    let (pipe_out, dest) = (
                        types::Fd(pipe.read.as_raw_fd()),
                        types::Fd(out.as_fd().as_raw_fd()),
                    );
                    let fill = opcode::Splice::new(file, region.offset() as i64, pipe_in, -1, *len)
                        .build();
                    let drain = opcode::Splice::new(pipe_out, -1, dest, -1, *len).build();
                    vec![fill.flags(squeue::Flags::IO_LINK), drain]
                },
            )
            .map_err(|QueueFull((region, out, ..))| SendRefused::QueueFull { region, out })?;
        self.ops.borrow_mut().mark_file(key, file, true);
        Ok(SendOp {
            handle: Path::Splice(Handle::new(&self.ops, key)),
        })
    }

    fn send_bounced<O: AsFd + 'static>(
        &mut self,
        region: LentRegion,
        out: O,
        bounce: Bounce,
        file: FileId,
    ) -> Result<SendOp<O>, SendRefused<O>> {
        let then = write_what_was_read::<(LentRegion, O, Bounce)>;
        let key = self
            .push_then(
                (region, out, bounce),
                None,
                then,
                |(region, out, bounce)| {
                    let dest = out.as_fd().as_raw_fd();
                    bounce.read(ReadFrom::Fd(region.as_raw_fd()), dest)
                },
            )
            .map_err(|QueueFull((region, out, _))| SendRefused::QueueFull { region, out })?;
        self.ops.borrow_mut().mark_file(key, file, true);
        Ok(SendOp {
            handle: Path::Bounce(Handle::new(&self.ops, key)),
        })
    }
}
