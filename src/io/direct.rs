//! O_DIRECT: telling whether an fd bypasses the page cache, and which alignment its
//! reads then need; and each thread's memory of the lent files it found to be
//! O_DIRECT, so a widened read or a split send asks the kernel once per file, not
//! once per call.

use super::error::RegionError;
use crate::Ticket;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

/// Used when nothing better is known: the largest logical block size in common use,
/// so a multiple of every smaller one.
pub const FALLBACK_ALIGN: u32 = 4096;

/// Where a [`DirectAlignment`] was learned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlignmentSource {
    /// `statx` with `STATX_DIOALIGN` (Linux 6.1+, on filesystems that report it).
    Statx,
    /// The block device's logical block size (`BLKSSZGET`), for a block device fd.
    LogicalBlockSize,
    /// `st_blksize` from `fstat`: the filesystem's preferred I/O size, a multiple of
    /// the real requirement on the filesystems that do not report it.
    PreferredBlockSize,
    /// [`FALLBACK_ALIGN`].
    Fallback,
}

/// The alignment O_DIRECT reads of one file need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectAlignment {
    /// Buffer addresses must be multiples of this.
    pub memory: u32,
    /// File offsets and lengths must be multiples of this.
    pub offset: u32,
    /// Where the numbers came from.
    pub source: AlignmentSource,
}

impl DirectAlignment {
    /// Learns the alignment of `fd`'s file: `statx(STATX_DIOALIGN)` first, then the
    /// block device's logical block size, then `st_blksize`, then 4096.
    pub fn of(fd: impl AsFd) -> Result<DirectAlignment, RegionError> {
        let fd = fd.as_fd();
        if let Some(found) = statx_dioalign(fd) {
            return Ok(found);
        }
        let stat = nix::sys::stat::fstat(fd).map_err(|errno| RegionError::Io {
            call: "fstat",
            errno,
        })?;
        let is_block = stat.st_mode & libc::S_IFMT == libc::S_IFBLK;
        if is_block {
            if let Some(size) = logical_block_size(fd) {
                return Ok(DirectAlignment {
                    memory: size,
                    offset: size,
                    source: AlignmentSource::LogicalBlockSize,
                });
            }
        }
        match u32::try_from(stat.st_blksize) {
            Ok(size) if size.is_power_of_two() => Ok(DirectAlignment {
                memory: size,
                offset: size,
                source: AlignmentSource::PreferredBlockSize,
            }),
            _ => Ok(DirectAlignment {
                memory: FALLBACK_ALIGN,
                offset: FALLBACK_ALIGN,
                source: AlignmentSource::Fallback,
            }),
        }
    }

    /// The alignment a bounce buffer needs to serve both rules at once.
    pub(crate) fn buffer_align(&self) -> usize {
        self.memory.max(self.offset) as usize
    }
}

/// True when `fd` was opened (or `fcntl`ed) with `O_DIRECT`.
pub fn is_direct(fd: impl AsFd) -> Result<bool, RegionError> {
    let flags = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_GETFL).map_err(|errno| {
        RegionError::Io {
            call: "fcntl(F_GETFL)",
            errno,
        }
    })?;
    Ok(flags & libc::O_DIRECT != 0)
}

/// How many O_DIRECT files each thread remembers: enough for the files a thread
/// serves at once, small enough that a linear search costs nanoseconds.
const KNOWN_MAX: usize = 32;

thread_local! {
    /// O_DIRECT files this thread has seen, by ticket (fd number and incarnation, so a
    /// reused number is a different key), newest last.
    static KNOWN_DIRECT: RefCell<VecDeque<(Ticket, DirectAlignment)>> =
        const { RefCell::new(VecDeque::new()) };
}

/// The alignment of `ticket`'s file if this thread has found it to be O_DIRECT.
///
/// Keyed by the file (its ticket), not by its device: `statx` reports the rule per
/// file (an inline-data or encrypted ext4 file, a realtime XFS file, differ from
/// their neighbours), and a ticket is known without a syscall where a device number
/// needs an `fstat`, which costs what the `statx` it would save does. A hit that is
/// wrong (the fd's `O_DIRECT` flag turned off since) only costs aligned reads of a
/// cached file; one whose rule changed is [`forget_direct`]ed on the `EINVAL`.
pub(crate) fn known_direct(ticket: Ticket) -> Option<DirectAlignment> {
    KNOWN_DIRECT.with_borrow(|known| {
        known
            .iter()
            .find(|(seen, _)| *seen == ticket)
            .map(|&(_, align)| align)
    })
}

/// Asks the kernel whether `fd` (the file of `ticket`) is O_DIRECT, and if so learns
/// and remembers its alignment for [`known_direct`]. One `fcntl`, and one `statx`
/// (or the fallbacks) for an O_DIRECT file.
pub(crate) fn learn_direct(
    ticket: Ticket,
    fd: BorrowedFd<'_>,
) -> Result<Option<DirectAlignment>, RegionError> {
    if !is_direct(fd)? {
        return Ok(None);
    }
    let align = DirectAlignment::of(fd)?;
    KNOWN_DIRECT.with_borrow_mut(|known| {
        known.retain(|(seen, _)| *seen != ticket);
        if known.len() == KNOWN_MAX {
            known.pop_front();
        }
        known.push_back((ticket, align));
    });
    Ok(Some(align))
}

/// Drops what this thread remembers about `ticket`'s file.
pub(crate) fn forget_direct(ticket: Ticket) {
    KNOWN_DIRECT.with_borrow_mut(|known| known.retain(|(seen, _)| *seen != ticket));
}

fn statx_dioalign(fd: BorrowedFd<'_>) -> Option<DirectAlignment> {
    // SAFETY: `statx` is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the empty C string with AT_EMPTY_PATH makes statx describe `fd` itself,
    // which the borrow keeps open; `stx` is a valid, writable statx buffer.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 || stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return None;
    }
    // Zero means "direct I/O is not supported here": the fallbacks decide then.
    let (memory, offset) = (stx.stx_dio_mem_align, stx.stx_dio_offset_align);
    (memory != 0 && offset != 0).then_some(DirectAlignment {
        memory,
        offset,
        source: AlignmentSource::Statx,
    })
}

fn logical_block_size(fd: BorrowedFd<'_>) -> Option<u32> {
    let mut size: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one `int` through the pointer, which is valid for it;
    // the borrow keeps `fd` open.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::BLKSSZGET, &mut size) };
    if rc != 0 {
        return None;
    }
    u32::try_from(size)
        .ok()
        .filter(|size| size.is_power_of_two())
}
