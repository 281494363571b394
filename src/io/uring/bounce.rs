//! What a ring send needs beyond the op table: the op's private pipe, sized to what
//! the kernel really gave it, and for O_DIRECT files an aligned bounce buffer.
//!
//! `splice` from an O_DIRECT file refuses (`EINVAL`) an offset or length off the
//! file's alignment, so a ring send of such a file reads the aligned span around
//! (the start of) its range into an aligned buffer, then writes the wanted bytes to
//! the destination, as the sync `send_to` does for its ragged edges. The write is
//! built when the read's CQE is reaped (a `Then`, table.rs) from what the read
//! really got: a read cut short by the file's end sends what it got, and one that
//! got none of the range ends the op with no write, so a send never comes back with
//! the same range to resume forever.

use super::handle::page_size;
use crate::io::aligned::AlignedBuf;
use crate::io::direct::DirectAlignment;
use io_uring::{opcode, squeue, types};
use nix::errno::Errno;
use std::any::Any;
use std::os::fd::{AsFd, OwnedFd, RawFd};

/// The most one O_DIRECT send op moves: what a pipe of 16 pages would.
pub(crate) const SPAN: u64 = 64 * 1024;

/// A send's private pipe and the most one fill may put in it.
pub(crate) struct Pipe {
    pub(crate) read: OwnedFd,
    pub(crate) write: OwnedFd,
    /// Its capacity in bytes: 16 pages, or fewer when the user's pipe pages ran
    /// out (`pipe-user-pages-soft`), which a fill sized for 16 would overrun.
    capacity: u64,
}

impl Pipe {
    pub(crate) fn new() -> Result<Pipe, Errno> {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let capacity = nix::fcntl::fcntl(write.as_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ)
            .ok()
            .and_then(|size| u64::try_from(size).ok())
            .unwrap_or(super::handle::PIPE_PAGES * page_size());
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// The bytes of `len` at `offset` one fill takes whole: a pipe holds one page
    /// fragment per slot, so an unaligned start takes a page's worth fewer, or
    /// the fill comes up short and breaks the link to the drain.
    pub(crate) fn fill_len(&self, offset: u64, len: u64) -> u32 {
        let page = page_size();
        let pages = (self.capacity / page).max(1);
        len.min(pages * page - offset % page)
            .min(u64::from(u32::MAX)) as u32
    }
}

/// An O_DIRECT send's aligned buffer and where its range sits in it.
pub(crate) struct Bounce {
    buf: AlignedBuf,
    /// The aligned file offset the read starts at.
    start: u64,
    /// Bytes before the range in the buffer.
    skip: usize,
    /// Bytes of the range this op sends at most.
    want: usize,
    /// The destination's fd, taken when the op was built (its `as_fd` is user
    /// code, which must not run where the write is built, under the table's
    /// borrow); the destination is parked beside this buffer.
    dest: RawFd,
    /// Bytes of the range the read got, once it completed.
    got: usize,
}

impl Bounce {
    /// A bounce for the first bytes of `len` at `offset` (`None` if `align` makes
    /// no valid layout).
    pub(crate) fn new(offset: u64, len: u64, align: DirectAlignment) -> Option<Bounce> {
        let unit = u64::from(align.offset).max(1);
        let start = offset / unit * unit;
        let skip = offset - start;
        let want = len.min(SPAN);
        let read_len = (skip + want).div_ceil(unit) * unit;
        Some(Bounce {
            buf: AlignedBuf::new(usize::try_from(read_len).ok()?, align.buffer_align())?,
            start,
            skip: skip as usize,
            want: want as usize,
            dest: -1,
            got: 0,
        })
    }

    /// Stage 0, the aligned read, from `file` (an `Fd` or a `Fixed`), and the
    /// destination the write will go to.
    pub(crate) fn read(&mut self, file: ReadFrom, dest: RawFd) -> squeue::Entry {
        self.dest = dest;
        let (ptr, len) = (self.buf.as_mut_ptr(), self.buf.len() as u32);
        match file {
            ReadFrom::Fd(fd) => opcode::Read::new(types::Fd(fd), ptr, len),
            ReadFrom::Fixed(slot) => opcode::Read::new(types::Fixed(slot), ptr, len),
        }
        .offset(self.start)
        .build()
    }

    /// The bytes of the range the read put in the buffer, or its errno.
    pub(crate) fn filled(&self, read: i32) -> Result<usize, Errno> {
        super::handle::result(read).map(|_| self.got)
    }

    /// The most this op asked for.
    pub(crate) fn asked(&self) -> usize {
        self.want
    }
}

/// Where a bounce read reads from.
#[derive(Clone, Copy)]
pub(crate) enum ReadFrom {
    Fd(RawFd),
    Fixed(u32),
}

/// Resources of an op with a [`Bounce`] in them.
pub(crate) trait Bounced: 'static {
    fn bounce(&mut self) -> &mut Bounce;
}

impl<O: 'static> Bounced for (crate::io::LentRegion, O, Bounce) {
    fn bounce(&mut self) -> &mut Bounce {
        &mut self.2
    }
}

impl<O: 'static> Bounced for (O, Bounce) {
    fn bounce(&mut self) -> &mut Bounce {
        &mut self.1
    }
}

/// The `Then` of a bounced send: write what the read got of the range, or end the
/// op (stage 1 gets the read's errno, or `ECANCELED` if the file ended before the
/// range).
pub(crate) fn write_what_was_read<R: Bounced>(
    resources: &mut dyn Any,
    read: i32,
) -> Result<squeue::Entry, i32> {
    let bounce = resources
        .downcast_mut::<R>()
        .expect("a bounced send parks its own resources")
        .bounce();
    let got = usize::try_from(read).map_err(|_| read)?;
    bounce.got = got.saturating_sub(bounce.skip).min(bounce.want);
    if bounce.got == 0 {
        return Err(-libc::ECANCELED);
    }
    // In bounds: `skip + got <= skip + want <= buf.len()`.
    let from = bounce.buf.as_mut_ptr().wrapping_add(bounce.skip);
    // Offset -1: the destination's own position, as a splice's drain uses.
    Ok(
        opcode::Write::new(types::Fd(bounce.dest), from, bounce.got as u32)
            .offset(u64::MAX)
            .build(),
    )
}
