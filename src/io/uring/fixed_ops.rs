//! Ops on a registered file ([`FixedFile`]): reads and splice-sends that name the
//! file by slot (`types::Fixed`), so the kernel skips the per-op fget/fput.

use super::bounce::{write_what_was_read, Bounce, Pipe, ReadFrom};
use super::error::{FixedOpError, FixedOpRefused};
use super::handle::{result, Handle, QueueFull};
use super::ops::OwnedBuf;
use super::ring::Ring;
use super::slots::FixedFile;
use io_uring::{opcode, squeue, types};
use nix::errno::Errno;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd};

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

/// A send from a registered file to a socket or pipe, in flight. See
/// [`Ring::send_fixed`].
pub struct FixedSendOp<O: AsFd + 'static> {
    handle: Path<O>,
}

enum Path<O: 'static> {
    Splice(Handle<(O, Pipe)>),
    Bounce(Handle<(O, Bounce)>),
}

/// A finished fixed-file send.
#[derive(Debug)]
pub struct FixedSendDone<O> {
    /// The destination, handed back.
    pub out: O,
    /// Bytes of the range moved from the file into the op's pipe (or bounce
    /// buffer), or why not.
    pub filled: Result<usize, Errno>,
    /// Bytes that reached `out`, or why not (`ECANCELED` after a short or
    /// cancelled fill: with `filled` `Ok(0)` the file ends before the range).
    pub sent: Result<usize, Errno>,
}

impl<O: AsFd + 'static> FixedSendOp<O> {
    /// True once both CQEs have been reaped.
    pub fn is_done(&self) -> bool {
        match &self.handle {
            Path::Splice(handle) => handle.is_done(),
            Path::Bounce(handle) => handle.is_done(),
        }
    }

    /// The result, once both CQEs have been reaped; the op back otherwise.
    pub fn finish(self) -> Result<FixedSendDone<O>, FixedSendOp<O>> {
        let done = match &self.handle {
            Path::Splice(handle) => handle.take().map(|((out, _pipe), results)| FixedSendDone {
                out,
                filled: result(results[0]),
                sent: result(results[1]),
            }),
            Path::Bounce(handle) => handle.take().map(|((out, bounce), results)| FixedSendDone {
                out,
                filled: bounce.filled(results[0]),
                sent: result(results[1]),
            }),
        };
        done.ok_or(self)
    }
}

impl<O: AsFd + 'static> fmt::Debug for FixedSendOp<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FixedSendOp").finish_non_exhaustive()
    }
}

fn queue_full<O>(out: O) -> FixedOpRefused<O> {
    FixedOpRefused {
        reason: FixedOpError::QueueFull,
        back: out,
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
            handle: Handle::new(&self.ops, key),
        })
    }

    /// Pushes a send of `len` bytes at `offset` of the registered `file` to `out`
    /// (at most 64 KiB, less a page for an unaligned offset, less when the kernel
    /// gave the op's pipe fewer pages): two linked splices, fixed file → a private
    /// pipe → `out`. An O_DIRECT file (known from its registration) goes through
    /// an aligned buffer instead: a read of the aligned span, then a write of the
    /// range's bytes, pushed when the read's CQE is reaped (keep submitting).
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
        let slot = file.slot;
        let direct = self.files.borrow().direct_of(slot);
        let bounce = direct.and_then(|align| Bounce::new(offset, len, align));
        let (key, handle) = if let Some(bounce) = bounce {
            let then = write_what_was_read::<(O, Bounce)>;
            let key = self
                .push_then((out, bounce), Some(slot), then, |(out, bounce)| {
                    let dest = out.as_fd().as_raw_fd();
                    bounce.read(ReadFrom::Fixed(slot), dest)
                })
                .map_err(|QueueFull((out, _))| queue_full(out))?;
            (key, Path::Bounce(Handle::new(&self.ops, key)))
        } else {
            let pipe = match Pipe::new() {
                Ok(pipe) => pipe,
                Err(errno) => {
                    return Err(FixedOpRefused {
                        reason: FixedOpError::Pipe(errno),
                        back: out,
                    })
                }
            };
            let len = pipe.fill_len(offset, len);
            let key = self
                .push((out, pipe), Some(slot), |(out, pipe)| {
                    let pipe_in = types::Fd(pipe.write.as_raw_fd());
                    let (pipe_out, dest) = (
                        types::Fd(pipe.read.as_raw_fd()),
                        types::Fd(out.as_fd().as_raw_fd()),
                    );
                    let fill =
                        opcode::Splice::new(types::Fixed(slot), offset as i64, pipe_in, -1, len)
                            .build();
                    let drain = opcode::Splice::new(pipe_out, -1, dest, -1, len).build();
                    vec![fill.flags(squeue::Flags::IO_LINK), drain]
                })
                .map_err(|QueueFull((out, _))| queue_full(out))?;
            (key, Path::Splice(Handle::new(&self.ops, key)))
        };
        self.files.borrow_mut().op_pushed(slot);
        if let Some(file) = self.files.borrow().file_of(slot) {
            self.ops.borrow_mut().mark_file(key, file, true);
        }
        Ok(FixedSendOp { handle })
    }
}
