//! The ops: a region read into an owned buffer, and a region spliced to a socket or
//! pipe through a private pipe. Each parks what the kernel touches in the table.

use super::handle::{result, Handle, QueueFull};
use super::ring::Ring;
use super::table::FileId;
use crate::io::aligned::AlignedBuf;
use crate::io::region::LentRegion;
use io_uring::{opcode, types};
use nix::errno::Errno;
use std::fmt;
use std::os::fd::AsRawFd;

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
            handle: Handle::new(&self.ops, key),
        })
    }
}
