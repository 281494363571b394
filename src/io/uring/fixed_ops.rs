//! Ops on a registered file ([`FixedFile`]): reads and splice-sends that name the
//! file by slot (`types::Fixed`), so the kernel skips the per-op fget/fput.

use super::error::{FixedOpError, FixedOpRefused};
use super::fixed::FixedFile;
use super::ops::{page_size, result, Handle, OwnedBuf, PIPE_PAGES};
use super::ring::Ring;
use io_uring::{opcode, squeue, types};
use nix::errno::Errno;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// A read of a registered file into an owned buffer, in flight. See [`Ring::read_fixed`].
pub struct FixedReadOp<B: OwnedBuf> {
    handle: Handle<B>,
}

/// A finished fixed-file read.
#[derive(Debug)]
pub struct FixedReadDone<B> {
    /// The buffer, its first `result` bytes filled.
    pub buf: B,
    /// Bytes read (fewer than asked at end of file), or the read's errno
    /// (`ECANCELED` if a cancel-then-close took the file).
    pub result: Result<usize, Errno>,
}

impl<B: OwnedBuf> FixedReadOp<B> {
    /// True once its CQE has been reaped.
    pub fn is_done(&self) -> bool {
        self.handle.is_done()
    }

    /// The result, once its CQE has been reaped; the op back otherwise.
    pub fn finish(self) -> Result<FixedReadDone<B>, FixedReadOp<B>> {
        match self.handle.take() {
            Some((buf, results)) => Ok(FixedReadDone {
                buf,
                result: result(results[0]),
            }),
            None => Err(self),
        }
    }
}

impl<B: OwnedBuf> fmt::Debug for FixedReadOp<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedReadOp").finish_non_exhaustive()
    }
}

/// A splice from a registered file to a socket or pipe, in flight. See
/// [`Ring::send_fixed`].
pub struct FixedSendOp<O: AsFd + 'static> {
    handle: Handle<(O, OwnedFd, OwnedFd)>,
}

/// A finished fixed-file send.
#[derive(Debug)]
pub struct FixedSendDone<O> {
    /// The destination, handed back.
    pub out: O,
    /// Bytes moved from the file into the op's pipe, or why not.
    pub filled: Result<usize, Errno>,
    /// Bytes that reached `out`, or why not (`ECANCELED` after a short fill).
    pub sent: Result<usize, Errno>,
}

impl<O: AsFd + 'static> FixedSendOp<O> {
    /// True once both CQEs have been reaped.
    pub fn is_done(&self) -> bool {
        self.handle.is_done()
    }

    /// The result, once both CQEs have been reaped; the op back otherwise.
    pub fn finish(self) -> Result<FixedSendDone<O>, FixedSendOp<O>> {
        match self.handle.take() {
            Some(((out, _read, _write), results)) => Ok(FixedSendDone {
                out,
                filled: result(results[0]),
                sent: result(results[1]),
            }),
            None => Err(self),
        }
    }
}

impl<O: AsFd + 'static> fmt::Debug for FixedSendOp<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedSendOp").finish_non_exhaustive()
    }
}

impl Ring {
    fn check_fixed(&self, file: &FixedFile) -> Result<(), FixedOpError> {
        self.files.borrow().check(&self.files, file)
    }

    /// Pushes a read of `min(buf.len(), 4 GiB - 1)` bytes at `offset` of the
    /// registered `file` into `buf`. The op owns `buf` until its CQE is reaped; the
    /// slot (so the loan) stays held until then even if `file` is released.
    pub fn read_fixed<B: OwnedBuf>(
        &mut self,
        file: &FixedFile,
        offset: u64,
        buf: B,
    ) -> Result<FixedReadOp<B>, FixedOpRefused<B>> {
        if let Err(reason) = self.check_fixed(file) {
            return Err(FixedOpRefused { reason, back: buf });
        }
        let slot = file.slot;
        let key = self
            .push(buf, Some(slot), |buf| {
                let len = (buf.bytes_len() as u64).min(u64::from(u32::MAX)) as u32;
                vec![
                    opcode::Read::new(types::Fixed(slot), buf.stable_mut_ptr(), len)
                        .offset(offset)
                        .build(),
                ]
            })
            .map_err(|full| FixedOpRefused {
                reason: FixedOpError::QueueFull,
                back: full.0,
            })?;
        self.files.borrow_mut().op_pushed(slot);
        if let Some(file) = self.files.borrow().file_of(slot) {
            self.ops.borrow_mut().mark_file(key, file, false);
        }
        Ok(FixedReadOp {
            handle: Handle::new(self, key),
        })
    }

    /// Pushes a send of `len` bytes at `offset` of the registered `file` to `out`
    /// (at most 64 KiB, less a page for an unaligned offset): two linked splices,
    /// fixed file → a private pipe → `out`.
    pub fn send_fixed<O: AsFd + 'static>(
        &mut self,
        file: &FixedFile,
        offset: u64,
        len: u64,
        out: O,
    ) -> Result<FixedSendOp<O>, FixedOpRefused<O>> {
        if let Err(reason) = self.check_fixed(file) {
            return Err(FixedOpRefused { reason, back: out });
        }
        let (pipe_read, pipe_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(pipe) => pipe,
            Err(errno) => {
                return Err(FixedOpRefused {
                    reason: FixedOpError::Pipe(errno),
                    back: out,
                })
            }
        };
        let slot = file.slot;
        let key = self
            .push(
                (out, pipe_read, pipe_write),
                Some(slot),
                |(out, pipe_read, pipe_write)| {
                    let page = page_size();
                    let len = len.min(PIPE_PAGES * page - offset % page) as u32;
                    let pipe_in = types::Fd(pipe_write.as_raw_fd());
                    let (pipe_out, dest) = (
                        types::Fd(pipe_read.as_raw_fd()),
                        types::Fd(out.as_fd().as_raw_fd()),
                    );
                    let fill =
                        opcode::Splice::new(types::Fixed(slot), offset as i64, pipe_in, -1, len)
                            .build();
                    let drain = opcode::Splice::new(pipe_out, -1, dest, -1, len).build();
                    vec![fill.flags(squeue::Flags::IO_LINK), drain]
                },
            )
            .map_err(|full| FixedOpRefused {
                reason: FixedOpError::QueueFull,
                back: full.0 .0,
            })?;
        self.files.borrow_mut().op_pushed(slot);
        if let Some(file) = self.files.borrow().file_of(slot) {
            self.ops.borrow_mut().mark_file(key, file, true);
        }
        Ok(FixedSendOp {
            handle: Handle::new(self, key),
        })
    }
}
