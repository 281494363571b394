//! The ops: a region read into an owned buffer, and a region spliced to a socket or
//! pipe through a private pipe. Each parks what the kernel touches in the table.

use super::ring::Ring;
use super::table::{FileId, Key, OpTable};
use crate::io::aligned::AlignedBuf;
use crate::io::region::LentRegion;
use io_uring::{opcode, squeue, types};
use nix::errno::Errno;
use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::rc::Rc;

/// A default pipe's capacity, in pages: the most one send op moves.
pub(crate) const PIPE_PAGES: u64 = 16;

mod sealed {
    pub trait Sealed {}
}

/// Buffers a read op can own: heap memory whose address does not change when the
/// owner moves. Sealed: only these types promise that.
pub trait OwnedBuf: sealed::Sealed + 'static {
    /// The start of the memory the kernel fills.
    #[doc(hidden)]
    fn stable_mut_ptr(&mut self) -> *mut u8;
    /// Its length.
    #[doc(hidden)]
    fn bytes_len(&self) -> usize;
}

impl sealed::Sealed for Vec<u8> {}
impl OwnedBuf for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

impl sealed::Sealed for Box<[u8]> {}
impl OwnedBuf for Box<[u8]> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

impl sealed::Sealed for AlignedBuf {}
impl OwnedBuf for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_len(&self) -> usize {
        self.len()
    }
}

/// The submission queue had no room: nothing was submitted, here is everything back.
#[derive(Debug)]
pub struct QueueFull<T>(pub T);

impl<T> fmt::Display for QueueFull<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the io_uring submission queue is full; submit what is queued, then push again")
    }
}

impl<T: fmt::Debug> std::error::Error for QueueFull<T> {}

pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the running system; no memory is passed.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// Handle of one op in a [`Ring`]'s table. Dropping it early parks the op's
/// resources until its last CQE is reaped.
pub(crate) struct Handle<R> {
    table: Rc<RefCell<OpTable>>,
    key: Key,
    _resources: PhantomData<R>,
}

impl<R: 'static> Handle<R> {
    pub(crate) fn new(ring: &Ring, key: Key) -> Handle<R> {
        Handle {
            table: Rc::clone(&ring.ops),
            key,
            _resources: PhantomData,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.table.borrow_mut().is_done(self.key)
    }

    pub(crate) fn take(&self) -> Option<(R, [i32; 2])> {
        let (resources, results) = self.table.borrow_mut().take_done(self.key)?;
        Some((
            *resources.downcast::<R>().expect("the op's own resources"),
            results,
        ))
    }
}

impl<R> Drop for Handle<R> {
    fn drop(&mut self) {
        let freed = self.table.borrow_mut().abandon(self.key);
        // Outside the borrow: the resources may hold user code (a destination's Drop).
        drop(freed);
    }
}

/// `ERESTARTSYS` and its kin (512..=516): kernel-internal codes that reach a CQE
/// when a cancel interrupts an op blocked in an io-wq worker (seen on 6.18 for a
/// splice into a full socket).
const KERNEL_RESTART: std::ops::RangeInclusive<i32> = 512..=516;

/// A CQE's result as bytes or errno; an interrupted op reports `ECANCELED`.
pub(crate) fn result(raw: i32) -> Result<usize, Errno> {
    usize::try_from(raw).map_err(|_| match -raw {
        errno if KERNEL_RESTART.contains(&errno) => Errno::ECANCELED,
        errno => Errno::from_raw(errno),
    })
}

/// A read of a region into an owned buffer, in flight. See [`Ring::read`].
pub struct ReadOp<B: OwnedBuf> {
    handle: Handle<(LentRegion, B)>,
}

/// A finished read.
#[derive(Debug)]
pub struct ReadDone<B> {
    /// The region, its loan still counted.
    pub region: LentRegion,
    /// The buffer, its first `result` bytes filled.
    pub buf: B,
    /// Bytes read (fewer than asked at end of file), or the read's errno.
    pub result: Result<usize, Errno>,
}

impl<B: OwnedBuf> ReadOp<B> {
    /// True once its CQE has been reaped.
    pub fn is_done(&self) -> bool {
        self.handle.is_done()
    }

    /// The result, once the CQE has been reaped; the op back otherwise.
    pub fn finish(self) -> Result<ReadDone<B>, ReadOp<B>> {
        match self.handle.take() {
            Some(((region, buf), results)) => Ok(ReadDone {
                region,
                buf,
                result: result(results[0]),
            }),
            None => Err(self),
        }
    }
}

impl<B: OwnedBuf> fmt::Debug for ReadOp<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadOp")
            .field("key", &self.handle.key)
            .finish()
    }
}

/// A splice of (the start of) a region to a socket or pipe, in flight. See
/// [`Ring::send`].
pub struct SendOp<O: AsFd + 'static> {
    handle: Handle<(LentRegion, O, OwnedFd, OwnedFd)>,
}

/// A finished send.
#[derive(Debug)]
pub struct SendDone<O> {
    /// The destination, handed back.
    pub out: O,
    /// Bytes moved from the file into the op's pipe, or why not.
    pub filled: Result<usize, Errno>,
    /// Bytes that reached `out`, or why not (`ECANCELED` when the fill came up
    /// short: the file ended inside the region).
    pub sent: Result<usize, Errno>,
    /// What is left to send (its loan still counted), or `None` when all of it went.
    pub rest: Option<LentRegion>,
}

impl<O: AsFd + 'static> SendOp<O> {
    /// True once both of its CQEs have been reaped.
    pub fn is_done(&self) -> bool {
        self.handle.is_done()
    }

    /// The result, once both CQEs have been reaped; the op back otherwise.
    pub fn finish(self) -> Result<SendDone<O>, SendOp<O>> {
        match self.handle.take() {
            Some(((region, out, _read, _write), results)) => {
                let sent = result(results[1]);
                let rest = match sent {
                    Ok(n) => region.advance(n as u64),
                    Err(_) => Some(region),
                };
                Ok(SendDone {
                    out,
                    filled: result(results[0]),
                    sent,
                    rest,
                })
            }
            None => Err(self),
        }
    }
}

impl<O: AsFd + 'static> fmt::Debug for SendOp<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendOp")
            .field("key", &self.handle.key)
            .finish()
    }
}

impl Ring {
    /// Pushes a read of the region's first `min(buf.len(), region.len(), 4 GiB - 1)`
    /// bytes into `buf` (submit it yourself). The op owns `region` and `buf` until
    /// its CQE is reaped, even if the handle is dropped.
    pub fn read<B: OwnedBuf>(
        &mut self,
        region: LentRegion,
        buf: B,
    ) -> Result<ReadOp<B>, QueueFull<(LentRegion, B)>> {
        let file = FileId::of(region.loan());
        let key = self.push((region, buf), None, |(region, buf)| {
            let len = (buf.bytes_len() as u64)
                .min(region.len())
                .min(u64::from(u32::MAX)) as u32;
            let fd = types::Fd(region.as_raw_fd());
            vec![opcode::Read::new(fd, buf.stable_mut_ptr(), len)
                .offset(region.offset())
                .build()]
        })?;
        self.ops.borrow_mut().mark_file(key, file, false);
        Ok(ReadOp {
            handle: Handle::new(self, key),
        })
    }

    /// Pushes a send of the region's first 64 KiB (less a page's worth for an
    /// unaligned start, or less at its end) to `out`: two linked
    /// splices, file → a private pipe → `out`. The op owns `region`, `out` and the
    /// pipe until both CQEs are reaped; [`SendDone::rest`] is what to push next.
    pub fn send<O: AsFd + 'static>(
        &mut self,
        region: LentRegion,
        out: O,
    ) -> Result<SendOp<O>, SendRefused<O>> {
        let (pipe_read, pipe_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(pipe) => pipe,
            Err(errno) => return Err(SendRefused::Pipe { errno, region, out }),
        };
        let file = FileId::of(region.loan());
        let key = self
            .push(
                (region, out, pipe_read, pipe_write),
                None,
                |(region, out, pipe_read, pipe_write)| {
                    // A pipe holds 16 page fragments: an unaligned start takes one page
                    // fewer bytes, or the fill comes up short and breaks the link.
                    let page = page_size();
                    let len = region.len().min(PIPE_PAGES * page - region.offset() % page) as u32;
                    let (file, pipe_in) = (
                        types::Fd(region.as_raw_fd()),
                        types::Fd(pipe_write.as_raw_fd()),
                    );
                    let (pipe_out, dest) = (
                        types::Fd(pipe_read.as_raw_fd()),
                        types::Fd(out.as_fd().as_raw_fd()),
                    );
                    let fill =
                        opcode::Splice::new(file, region.offset() as i64, pipe_in, -1, len).build();
                    let drain = opcode::Splice::new(pipe_out, -1, dest, -1, len).build();
                    vec![fill.flags(squeue::Flags::IO_LINK), drain]
                },
            )
            .map_err(|QueueFull((region, out, ..))| SendRefused::QueueFull { region, out })?;
        self.ops.borrow_mut().mark_file(key, file, true);
        Ok(SendOp {
            handle: Handle::new(self, key),
        })
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
