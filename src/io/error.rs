//! What can go wrong reading or sending a region, and what to do about it.

use crate::LendError;
use nix::errno::Errno;
use std::fmt;

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
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegionError {
    /// A region, sub-region or chunk of zero bytes was asked for.
    ZeroLength,
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
    /// Pinning a ticket or counting one more loan for a sub-region was refused.
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
            RegionError::Overflow { offset, len } => write!(
                f,
                "region at offset {offset} of {len} bytes ends past the largest file offset \
                 (i64::MAX); check the range's arithmetic"
            ),
            RegionError::OutOfRegion { at, len } => write!(
                f,
                "position {at} is past the end of a {len}-byte region; stay within 0..={len}"
            ),
            RegionError::Lend(error) => write!(f, "cannot lend the region's file: {error}"),
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

impl std::error::Error for RegionError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RegionError::Lend(error) => Some(error),
            _ => None,
        }
    }
}

impl From<LendError> for RegionError {
    fn from(error: LendError) -> Self {
        RegionError::Lend(error)
    }
}

impl From<RegionError> for std::io::Error {
    fn from(error: RegionError) -> Self {
        use std::io::ErrorKind;
        let kind = match error {
            RegionError::Io { errno, .. } => return errno.into(),
            RegionError::Lend(error) => return error.into(),
            RegionError::ShortRead { .. } => ErrorKind::UnexpectedEof,
            _ => ErrorKind::InvalidInput,
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
