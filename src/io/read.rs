//! Positional reads of a [`LentRegion`] on any thread: `pread(2)` looped over short
//! reads and `EINTR`, with O_DIRECT handled by widening to the aligned range.

use super::aligned::AlignedBuf;
use super::direct::{forget_direct, is_direct, known_direct, learn_direct, DirectAlignment};
use super::error::{Misaligned, RegionError};
use super::region::LentRegion;
use nix::errno::Errno;
use std::cell::Cell;
use std::os::fd::{AsFd, BorrowedFd};

/// The most a widened O_DIRECT read bounces at once (a multiple of every alignment).
pub(super) const BOUNCE_MAX: u64 = 1 << 20;
/// How much `read_to_end` grows its vector per read.
const GROW: u64 = 1 << 20;

/// Fills `buf` from `pos` until it is full or the file ends. `direct` stops at the
/// first short read: on O_DIRECT the next offset would be unaligned, and a short read
/// there means end of file. Returns the bytes read and the error that stopped it.
pub(super) fn pread_fill(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    pos: u64,
    direct: bool,
) -> (usize, Option<Errno>) {
    let mut done = 0;
    while done < buf.len() {
        // Cannot overflow: regions end at or below i64::MAX (checked at construction).
        let at = (pos + done as u64) as i64;
        match nix::sys::uio::pread(fd, &mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                if direct {
                    break;
                }
            }
            Err(Errno::EINTR) => continue,
            Err(errno) => return (done, Some(errno)),
        }
    }
    (done, None)
}

pub(super) fn io(errno: Errno) -> RegionError {
    RegionError::Io {
        call: "pread",
        errno,
    }
}

/// True when an O_DIRECT read of `buf` at `pos` meets `align` as it is, so it needs
/// no bounce buffer.
fn fits(align: DirectAlignment, buf: &[u8], pos: u64) -> bool {
    let offset = u64::from(align.offset);
    pos % offset == 0
        && buf.len() as u64 % offset == 0
        && buf.as_ptr() as usize % align.memory as usize == 0
}

/// Reads `buf.len()` bytes (fewer at end of file) from `pos` of `region`'s file,
/// whatever its flags.
fn read_any(region: &LentRegion, buf: &mut [u8], pos: u64) -> Result<usize, RegionError> {
    let fd = region.as_fd();
    let ticket = region.loan().ticket();
    // A file this thread already knows to be O_DIRECT goes straight to the read that
    // suits it, without the refused pread, the fcntl and the statx of the first time.
    if let Some(align) = known_direct(ticket) {
        let read = if fits(align, buf, pos) {
            match pread_fill(fd, buf, pos, true) {
                (done, None) => Ok(done),
                (_, Some(errno)) => Err(io(errno)),
            }
        } else {
            read_widened(fd, align, buf, pos)
        };
        match read {
            // The remembered rule no longer holds (the fd number's file changed in a
            // way its ticket did not show): learn it again below.
            Err(RegionError::Io {
                errno: Errno::EINVAL,
                ..
            }) => forget_direct(ticket),
            read => return read,
        }
    }
    // The common case pays no extra syscall: O_DIRECT is looked up only once the
    // kernel has refused an unaligned request.
    match pread_fill(fd, buf, pos, false) {
        (done, None) => Ok(done),
        (done, Some(Errno::EINVAL)) => match learn_direct(ticket, fd)? {
            Some(align) => Ok(done + read_widened(fd, align, &mut buf[done..], pos + done as u64)?),
            None => Err(io(Errno::EINVAL)),
        },
        (_, Some(errno)) => Err(io(errno)),
    }
}

/// An O_DIRECT read of any range: reads the aligned range around it into an aligned
/// bounce buffer and copies out the asked bytes.
fn read_widened(
    fd: BorrowedFd<'_>,
    align: DirectAlignment,
    buf: &mut [u8],
    pos: u64,
) -> Result<usize, RegionError> {
    let unit = u64::from(align.offset);
    let wanted_end = pos + buf.len() as u64;
    let span = wanted_end.div_ceil(unit) * unit - pos / unit * unit;
    let bounce_len = span.min(BOUNCE_MAX.max(unit));
    with_bounce(bounce_len as usize, align.buffer_align(), |bounce| {
        copy_widened(fd, buf, pos, unit, bounce_len, bounce)
    })
    .ok_or(RegionError::Overflow {
        offset: pos,
        len: buf.len() as u64,
    })?
}

thread_local! {
    /// Each thread's bounce buffer, kept between widened reads: a fresh zeroed
    /// allocation of up to `BOUNCE_MAX` per read costs page faults comparable to the
    /// disk read itself. One buffer per thread that ever widened a read.
    static BOUNCE: Cell<Option<AlignedBuf>> = const { Cell::new(None) };
}

/// Runs `f` on a bounce buffer of at least `len` bytes aligned to `align` (a power
/// of two), reusing this thread's; `None` if one cannot be allocated. Used by the
/// widened reads and by the copying send (`f` gets exactly `len` bytes).
pub(super) fn with_bounce<R>(
    len: usize,
    align: usize,
    f: impl FnOnce(&mut [u8]) -> R,
) -> Option<R> {
    // Taken out of the cell while in use, so a nested call simply allocates its own.
    let mut bounce = match BOUNCE.take() {
        Some(kept) if kept.len() >= len && kept.align() >= align => kept,
        // A replacement serves what the old one did too, so alternating small and
        // large (or loosely and strictly aligned) users do not reallocate each time.
        Some(kept) => AlignedBuf::new(len.max(kept.len()), align.max(kept.align()))?,
        None => AlignedBuf::new(len, align)?,
    };
    let result = f(&mut bounce[..len]);
    BOUNCE.set(Some(bounce));
    Some(result)
}

/// Where an aligned read that wants to reach `end` must stop: the kernel refuses
/// (`EINVAL`) a read whose end passes `i64::MAX`, so the last `unit`-block below it
/// cannot be read with O_DIRECT; a buffered read there finds end of file, and so do
/// the widened reads and copying sends (no filesystem has bytes there).
pub(super) fn direct_read_end(end: u64, unit: u64) -> u64 {
    end.min(i64::MAX as u64 / unit * unit)
}

/// The loop of [`read_widened`]: aligned reads of at most `bounce_len` into `bounce`,
/// copying the asked bytes out to `buf`.
fn copy_widened(
    fd: BorrowedFd<'_>,
    buf: &mut [u8],
    pos: u64,
    unit: u64,
    bounce_len: u64,
    bounce: &mut [u8],
) -> Result<usize, RegionError> {
    let wanted_end = pos + buf.len() as u64;
    let mut done = 0;
    while done < buf.len() {
        let want = pos + done as u64;
        let start = want / unit * unit;
        let skip = (want - start) as usize;
        let end = direct_read_end(
            (wanted_end.div_ceil(unit) * unit).min(start + bounce_len),
            unit,
        );
        if end <= start {
            break;
        }
        let io_len = (end - start) as usize;
        let (got, error) = pread_fill(fd, &mut bounce[..io_len], start, true);
        if let Some(errno) = error {
            return Err(io(errno));
        }
        if got <= skip {
            break;
        }
        let take = (got - skip).min(buf.len() - done);
        buf[done..done + take].copy_from_slice(&bounce[skip..skip + take]);
        done += take;
        if got < io_len {
            break;
        }
    }
    Ok(done)
}

impl LentRegion {
    /// The part of `buf` a read at `at` (relative to the region) may fill, or
    /// `OutOfRegion` if `at` is past the end.
    fn clip<'b>(&self, at: u64, buf: &'b mut [u8]) -> Result<&'b mut [u8], RegionError> {
        if at > self.len() {
            return Err(RegionError::OutOfRegion {
                at,
                len: self.len(),
            });
        }
        let room = (self.len() - at).min(buf.len() as u64) as usize;
        Ok(&mut buf[..room])
    }

    /// Reads from `at` (relative to the region) into `buf`, as much as the region and
    /// the file have: returns fewer bytes than `buf.len()` only at the region's end or
    /// the file's. Short reads and `EINTR` are retried; on an O_DIRECT fd an unaligned
    /// request is served through an aligned bounce buffer (never `EINVAL`).
    pub fn read_at(&self, at: u64, buf: &mut [u8]) -> Result<usize, RegionError> {
        let buf = self.clip(at, buf)?;
        read_any(self, buf, self.offset() + at)
    }

    /// Fills all of `buf` from `at`: `OutOfRegion` if the region is too short for it,
    /// `ShortRead` (with the count that is in `buf`) if the file is.
    pub fn read_exact_at(&self, at: u64, buf: &mut [u8]) -> Result<(), RegionError> {
        let wanted = buf.len() as u64;
        if at.checked_add(wanted).map_or(true, |end| end > self.len()) {
            return Err(RegionError::OutOfRegion {
                at: at.saturating_add(wanted),
                len: self.len(),
            });
        }
        let read = self.read_at(at, buf)? as u64;
        if read < wanted {
            return Err(RegionError::ShortRead { read, wanted });
        }
        Ok(())
    }

    /// Appends the region's bytes to `out`, as many as the file has: the count
    /// returned is below [`len`](LentRegion::len) exactly when the file ends first.
    pub fn read_to_end(&self, out: &mut Vec<u8>) -> Result<usize, RegionError> {
        let start = out.len();
        let mut at = 0;
        while at < self.len() {
            let step = (self.len() - at).min(GROW) as usize;
            let filled = out.len();
            out.resize(filled + step, 0);
            let read = self.read_at(at, &mut out[filled..]);
            let read = match read {
                Ok(read) => read,
                Err(error) => {
                    out.truncate(filled);
                    return Err(error);
                }
            };
            out.truncate(filled + read);
            at += read as u64;
            if read < step {
                break;
            }
        }
        Ok(out.len() - start)
    }

    /// The whole region in a new vector, or `ShortRead` if the file ends first.
    pub fn read_to_vec(&self) -> Result<Vec<u8>, RegionError> {
        let mut out = Vec::new();
        let read = self.read_to_end(&mut out)? as u64;
        if read < self.len() {
            return Err(RegionError::ShortRead {
                read,
                wanted: self.len(),
            });
        }
        Ok(out)
    }

    /// As [`read_at`](LentRegion::read_at), but never copies through a bounce buffer:
    /// on an O_DIRECT fd the file offset, the length read (`buf` clipped to the
    /// region) and `buf`'s address must meet the file's [`DirectAlignment`], or
    /// `Misaligned` names the rule. On other fds it is `read_at`.
    pub fn read_direct_at(&self, at: u64, buf: &mut [u8]) -> Result<usize, RegionError> {
        let buf = self.clip(at, buf)?;
        let fd = self.as_fd();
        // The flag is asked every time (it can be changed by fcntl, and a wrong answer
        // here would refuse a good read); the alignment is remembered per file.
        if !is_direct(fd)? {
            return read_any(self, buf, self.offset() + at);
        }
        let ticket = self.loan().ticket();
        let align = match known_direct(ticket) {
            Some(align) => align,
            None => match learn_direct(ticket, fd)? {
                Some(align) => align,
                // O_DIRECT was turned off between the two questions.
                None => return read_any(self, buf, self.offset() + at),
            },
        };
        let pos = self.offset() + at;
        let checks = [
            (Misaligned::Offset, pos, align.offset),
            (Misaligned::Length, buf.len() as u64, align.offset),
            (Misaligned::Buffer, buf.as_ptr() as u64, align.memory),
        ];
        for (what, value, align) in checks {
            if value % u64::from(align) != 0 {
                return Err(RegionError::Misaligned { what, value, align });
            }
        }
        match pread_fill(fd, buf, pos, true) {
            (done, None) => Ok(done),
            (_, Some(errno)) => Err(io(errno)),
        }
    }

    /// As [`read_exact_at`](LentRegion::read_exact_at) with the no-copy rules of
    /// [`read_direct_at`](LentRegion::read_direct_at).
    pub fn read_exact_direct_at(&self, at: u64, buf: &mut [u8]) -> Result<(), RegionError> {
        let wanted = buf.len() as u64;
        if at.checked_add(wanted).map_or(true, |end| end > self.len()) {
            return Err(RegionError::OutOfRegion {
                at: at.saturating_add(wanted),
                len: self.len(),
            });
        }
        let read = self.read_direct_at(at, buf)? as u64;
        if read < wanted {
            return Err(RegionError::ShortRead { read, wanted });
        }
        Ok(())
    }
}
