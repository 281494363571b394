//! What can go wrong reading or sending a region, and what to do about it.

use crate::LendError;
use nix::errno::Errno;
use std::fmt;
use std::os::fd::RawFd;

/// Which part of a no-copy O_DIRECT request broke the file's alignment rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misaligned {
    /// The file offset the read starts at.
    Offset,
    /// The number of bytes asked for.
    Length,
    /// The address of the caller's buffer.
    Buffer,
}

/// Why a region could not be made, split, pinned or read. Building and splitting
/// errors take nothing: no loan was counted and no byte was read.
///
/// The lending refusals a region meets (`Closed`, `Closing`, `Stale`, `Saturated`)
/// are variants of their own, so one `match` sees them;
/// [`lend_error`](RegionError::lend_error) gives the [`LendError`] behind any of
/// them. Converts into `std::io::Error` (so `?` works in `io::Result` code), which
/// keeps this value: `io_error.get_ref()` downcasts back to it, except for
/// `Io`, which becomes the plain OS error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegionError {
    /// A region, sub-region or chunk of zero bytes was asked for.
    ZeroLength,
    /// A range whose start is past its end, as in `slice(7..3)`.
    Reversed {
        /// The start asked for (relative to the region).
        start: u64,
        /// The end asked for, below `start`.
        end: u64,
    },
    /// `offset + len` does not fit in a file offset (`off_t`, at most `i64::MAX`).
    Overflow {
        /// The offset asked for.
        offset: u64,
        /// The length asked for.
        len: u64,
    },
    /// A position or range relative to the region reaches past its end.
    OutOfRegion {
        /// The position or range end asked for, relative to the region's start.
        at: u64,
        /// The region's length.
        len: u64,
    },
    /// The file was closed (no lender lends its fd number now): re-open and lend it
    /// again. [`LendError::Closed`].
    Closed {
        /// The fd number the region named.
        fd: RawFd,
    },
    /// The owner is closing the file: existing loans drain, new ones are refused.
    /// [`LendError::Closing`].
    Closing {
        /// The fd number being closed.
        fd: RawFd,
    },
    /// The file was closed and its fd number is now lent for another file.
    /// [`LendError::Stale`].
    Stale {
        /// The reused fd number.
        fd: RawFd,
    },
    /// The file has as many loans outstanding as its limit allows.
    /// [`LendError::Saturated`].
    Saturated {
        /// The saturated fd.
        fd: RawFd,
        /// Its limit on outstanding loans.
        limit: u32,
    },
    /// Any other refusal to lend (one a region does not meet by itself).
    Lend(LendError),
    /// The file ended before the region did: `read` bytes exist of the `wanted`.
    ShortRead {
        /// Bytes that were read (and are in the caller's buffer).
        read: u64,
        /// Bytes that were asked for.
        wanted: u64,
    },
    /// A no-copy read on an O_DIRECT fd broke the file's alignment rule.
    Misaligned {
        /// What was misaligned.
        what: Misaligned,
        /// Its value (offset, length, or buffer address).
        value: u64,
        /// The alignment it must be a multiple of.
        align: u32,
    },
    /// The system call failed.
    Io {
        /// The call that failed.
        call: &'static str,
        /// Its errno.
        errno: Errno,
    },
}

impl fmt::Display for RegionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RegionError::ZeroLength => {
                f.write_str("a region of zero bytes was asked for; ask for at least one byte")
            }
            RegionError::Reversed { start, end } => write!(
                f,
                "range {start}..{end} is reversed (its start is past its end); swap the bounds"
            ),
            RegionError::Overflow { offset, len } => write!(
                f,
                "region at offset {offset} of {len} bytes ends past the largest file offset \
                 (i64::MAX); check the range's arithmetic"
            ),
            RegionError::OutOfRegion { at, len } => write!(
                f,
                "position {at} is past the end of a {len}-byte region; stay within 0..={len}"
            ),
            RegionError::Closed { .. }
            | RegionError::Closing { .. }
            | RegionError::Stale { .. }
            | RegionError::Saturated { .. }
            | RegionError::Lend(_) => match self.lend_error() {
                Some(error) => write!(f, "cannot lend the region's file: {error}"),
                None => unreachable!("fdlend: every lending variant names its LendError"),
            },
            RegionError::ShortRead { read, wanted } => write!(
                f,
                "the file ended after {read} of {wanted} bytes; the region reaches past end of \
                 file, so use a read that accepts fewer bytes or shrink the region"
            ),
            RegionError::Misaligned { what, value, align } => {
                let what = match what {
                    Misaligned::Offset => "file offset",
                    Misaligned::Length => "length",
                    Misaligned::Buffer => "buffer address",
                };
                write!(
                    f,
                    "O_DIRECT {what} {value:#x} is not a multiple of {align}; align it (an \
                     AlignedBuf for buffers) or use the copying read"
                )
            }
            RegionError::Io { call, errno } => write!(f, "{call} failed: {}", errno.desc()),
        }
    }
}

impl RegionError {
    /// The lending refusal behind this error, if it is one (`Closed`, `Closing`,
    /// `Stale`, `Saturated` or `Lend`).
    pub fn lend_error(&self) -> Option<LendError> {
        Some(match *self {
            RegionError::Closed { fd } => LendError::Closed { fd },
            RegionError::Closing { fd } => LendError::Closing { fd },
            RegionError::Stale { fd } => LendError::Stale { fd },
            RegionError::Saturated { fd, limit } => LendError::Saturated { fd, limit },
            RegionError::Lend(error) => error,
            _ => return None,
        })
    }
}

// The message already includes the lending refusal's, so no `source` repeats it.
impl std::error::Error for RegionError {}

impl From<LendError> for RegionError {
    fn from(error: LendError) -> Self {
        match error {
            LendError::Closed { fd } => RegionError::Closed { fd },
            LendError::Closing { fd } => RegionError::Closing { fd },
            LendError::Stale { fd } => RegionError::Stale { fd },
            LendError::Saturated { fd, limit } => RegionError::Saturated { fd, limit },
            other => RegionError::Lend(other),
        }
    }
}

impl From<RegionError> for std::io::Error {
    fn from(error: RegionError) -> Self {
        use std::io::ErrorKind;
        let kind = match error {
            // The OS error itself, so `raw_os_error()` works as for any failed call.
            RegionError::Io { errno, .. } => return errno.into(),
            RegionError::ShortRead { .. } => ErrorKind::UnexpectedEof,
            _ => match error.lend_error() {
                // The kind a bare LendError converts to, so both agree.
                Some(lend) => std::io::Error::from(lend).kind(),
                None => ErrorKind::InvalidInput,
            },
        };
        std::io::Error::new(kind, error)
    }
}

/// Which mechanism moved a region's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SendPath {
    /// `sendfile(2)`: in the kernel, no copy to user space.
    Sendfile,
    /// `splice(2)`, directly into a pipe or through a private pipe into anything else.
    Splice,
    /// `pread(2)` into a buffer, then `send(2)`/`write(2)` from it.
    ReadWrite,
}

/// Why sending a region stopped. The region is gone in every case (its loan
/// returned); `sent` says how many bytes reached the destination first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The reader hung up (`EPIPE` or `ECONNRESET`).
    PeerGone {
        /// Bytes sent before it did.
        sent: u64,
        /// `EPIPE` or `ECONNRESET`.
        errno: Errno,
    },
    /// The file ended before the region did.
    SourceEnded {
        /// Bytes sent (all the file had in the region).
        sent: u64,
        /// The region's length.
        wanted: u64,
    },
    /// Reading the region failed (the copy path's read, including its O_DIRECT
    /// widening).
    Read {
        /// Bytes sent before it did.
        sent: u64,
        /// What failed.
        error: RegionError,
    },
    /// Any other failure of the path that was running.
    Io {
        /// Bytes sent before it.
        sent: u64,
        /// The path that failed (no fallback serves after the first byte of a
        /// failure other than "this path cannot do that").
        path: SendPath,
        /// Its errno.
        errno: Errno,
    },
}

impl SendError {
    /// Bytes that reached the destination before the error.
    pub fn sent(&self) -> u64 {
        match *self {
            SendError::PeerGone { sent, .. }
            | SendError::SourceEnded { sent, .. }
            | SendError::Read { sent, .. }
            | SendError::Io { sent, .. } => sent,
        }
    }
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SendError::PeerGone { sent, errno } => write!(
                f,
                "the reader hung up ({}) after {sent} bytes; drop the connection",
                errno.desc()
            ),
            SendError::SourceEnded { sent, wanted } => write!(
                f,
                "the file ended after {sent} of {wanted} bytes; the region reaches past end of \
                 file (the reader got fewer bytes than promised, so close its connection)"
            ),
            SendError::Read { sent, error } => {
                write!(
                    f,
                    "reading the region failed after {sent} bytes sent: {error}"
                )
            }
            SendError::Io { sent, path, errno } => {
                write!(f, "{path:?} failed after {sent} bytes: {}", errno.desc())
            }
        }
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SendError::Read { error, .. } => Some(error),
            _ => None,
        }
    }
}

impl From<SendError> for std::io::Error {
    fn from(error: SendError) -> Self {
        use std::io::ErrorKind;
        let kind = match error {
            SendError::PeerGone { errno, .. } | SendError::Io { errno, .. } => {
                std::io::Error::from(errno).kind()
            }
            SendError::SourceEnded { .. } => ErrorKind::UnexpectedEof,
            SendError::Read { .. } => ErrorKind::Other,
        };
        std::io::Error::new(kind, error)
    }
}
