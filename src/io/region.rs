//! [`LentRegion`]: a loan plus a byte range of its file, and [`RegionTicket`], the
//! same range held by a ticket (nothing open until it is pinned).

use super::error::RegionError;
use crate::{Lender, Loan, Ticket};
use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

/// The largest end a region may have: file offsets are `off_t`.
const MAX_END: u64 = i64::MAX as u64;

/// Checks a range once, so every holder of a region may add `offset + len`.
fn validate(offset: u64, len: u64) -> Result<(), RegionError> {
    if len == 0 {
        return Err(RegionError::ZeroLength);
    }
    match offset.checked_add(len) {
        Some(end) if end <= MAX_END => Ok(()),
        _ => Err(RegionError::Overflow { offset, len }),
    }
}

/// Resolves a range relative to a region of `len` bytes to `(start, end)`.
fn resolve(range: impl RangeBounds<u64>, len: u64) -> Result<(u64, u64), RegionError> {
    let start = match range.start_bound() {
        Bound::Included(&at) => at,
        Bound::Excluded(&at) => at
            .checked_add(1)
            .ok_or(RegionError::OutOfRegion { at, len })?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&at) => at
            .checked_add(1)
            .ok_or(RegionError::OutOfRegion { at, len })?,
        Bound::Excluded(&at) => at,
        Bound::Unbounded => len,
    };
    // A reversed range is named as such before its bounds are checked: `7..3` is
    // a mistake in the range's order, whatever the region's length.
    if start > end {
        return Err(RegionError::Reversed { start, end });
    }
    if end > len {
        return Err(RegionError::OutOfRegion { at: end, len });
    }
    if start == end {
        return Err(RegionError::ZeroLength);
    }
    Ok((start, end))
}

/// `len` bytes of a lent file from `offset`: the unit of work a request hands to
/// another thread. `Send`, 24 bytes, moved without any syscall; its loan keeps the
/// file open until the region (and every sub-region) is dropped.
///
/// The range is checked once, at construction: never empty, and `offset + len`
/// fits in a file offset. It may reach past end of file; reads then say so.
pub struct LentRegion {
    loan: Loan,
    offset: u64,
    len: u64,
}

impl LentRegion {
    /// A region of `loan`'s file. Refused (and the loan returned) for an empty or
    /// overflowing range.
    pub fn new(loan: Loan, offset: u64, len: u64) -> Result<LentRegion, RegionError> {
        validate(offset, len)?;
        Ok(LentRegion { loan, offset, len })
    }

    /// The file offset of the first byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Its length in bytes, never zero.
    #[allow(clippy::len_without_is_empty)] // a region is never empty
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The file offset one past the last byte.
    pub fn end(&self) -> u64 {
        self.offset + self.len
    }

    /// The loan that keeps the file open.
    pub fn loan(&self) -> &Loan {
        &self.loan
    }

    /// Gives up the range and keeps the loan.
    pub fn into_loan(self) -> Loan {
        self.loan
    }

    /// A ticket for the same range: holds nothing open.
    pub fn ticket(&self) -> RegionTicket {
        RegionTicket {
            ticket: self.loan.ticket(),
            offset: self.offset,
            len: self.len,
        }
    }

    /// Splits into `[0, at)` and `[at, len)` (relative to the region). The second half
    /// counts one more loan, so this can fail with `Saturated`, returning the region
    /// dropped; `at` must leave both halves non-empty.
    pub fn split_at(self, at: u64) -> Result<(LentRegion, LentRegion), RegionError> {
        if at == 0 || at >= self.len {
            return Err(if at == 0 {
                RegionError::ZeroLength
            } else {
                RegionError::OutOfRegion { at, len: self.len }
            });
        }
        let tail = LentRegion {
            loan: self.loan.try_clone()?,
            offset: self.offset + at,
            len: self.len - at,
        };
        let head = LentRegion {
            loan: self.loan,
            offset: self.offset,
            len: at,
        };
        Ok((head, tail))
    }

    /// A sub-region, `range` relative to this one, with its own loan.
    pub fn slice(&self, range: impl RangeBounds<u64>) -> Result<LentRegion, RegionError> {
        let (start, end) = resolve(range, self.len)?;
        Ok(LentRegion {
            loan: self.loan.try_clone()?,
            offset: self.offset + start,
            len: end - start,
        })
    }

    /// The part after the first `n` bytes, keeping this loan (no new count), or
    /// `None` when nothing is left: how sends resume.
    pub fn advance(self, n: u64) -> Option<LentRegion> {
        (n < self.len).then(|| LentRegion {
            loan: self.loan,
            offset: self.offset + n,
            len: self.len - n,
        })
    }

    /// An iterator over consecutive sub-regions of at most `chunk` bytes. Each but
    /// the last counts one more loan; the last takes this region's.
    pub fn chunks(self, chunk: u64) -> Result<Chunks, RegionError> {
        if chunk == 0 {
            return Err(RegionError::ZeroLength);
        }
        Ok(Chunks {
            rest: Some(self),
            chunk,
        })
    }
}

impl AsFd for LentRegion {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.loan.as_fd()
    }
}

impl AsRawFd for LentRegion {
    fn as_raw_fd(&self) -> RawFd {
        self.loan.as_raw_fd()
    }
}

impl fmt::Debug for LentRegion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LentRegion")
            .field("fd", &self.loan.as_raw_fd())
            .field("epoch", &self.loan.epoch())
            .field("range", &(self.offset..self.end()))
            .finish()
    }
}

/// Consecutive sub-regions of a [`LentRegion`]; see [`LentRegion::chunks`].
///
/// Yields `Err` (and ends) if counting a chunk's loan is refused.
#[derive(Debug)]
pub struct Chunks {
    rest: Option<LentRegion>,
    chunk: u64,
}

impl Iterator for Chunks {
    type Item = Result<LentRegion, RegionError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest.take()?;
        if rest.len <= self.chunk {
            return Some(Ok(rest));
        }
        match rest.split_at(self.chunk) {
            Ok((head, tail)) => {
                self.rest = Some(tail);
                Some(Ok(head))
            }
            Err(error) => Some(Err(error)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self
            .rest
            .as_ref()
            .map_or(0, |rest| rest.len.div_ceil(self.chunk));
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        (n.min(1), Some(n))
    }
}

/// A byte range of a file held by a [`Ticket`]: `Copy`, holds nothing open, free to
/// make and drop. [`RegionTicket::pin`] makes the [`LentRegion`] when the bytes are
/// needed, if the very same file is still open.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct RegionTicket {
    ticket: Ticket,
    offset: u64,
    len: u64,
}

impl RegionTicket {
    /// A ticket for `len` bytes from `offset`, checked as [`LentRegion::new`] checks.
    pub fn new(ticket: Ticket, offset: u64, len: u64) -> Result<RegionTicket, RegionError> {
        validate(offset, len)?;
        Ok(RegionTicket {
            ticket,
            offset,
            len,
        })
    }

    /// The region, with a loan, or why not (`Closed`, `Closing`, `Stale`,
    /// `Saturated`).
    pub fn pin(&self) -> Result<LentRegion, RegionError> {
        Ok(LentRegion {
            loan: self.ticket.pin()?,
            offset: self.offset,
            len: self.len,
        })
    }

    /// The file's ticket.
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }

    /// The file offset of the first byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Its length in bytes, never zero.
    #[allow(clippy::len_without_is_empty)] // never empty
    pub fn len(&self) -> u64 {
        self.len
    }
}

impl Lender {
    /// A region of this lender's file with a new loan: `LentRegion::new(self.loan()?,
    /// offset, len)`.
    pub fn region(&self, offset: u64, len: u64) -> Result<LentRegion, RegionError> {
        validate(offset, len)?;
        LentRegion::new(self.loan()?, offset, len)
    }
}

impl Ticket {
    /// The same file's range as a ticket that holds nothing open until pinned.
    pub fn region(self, offset: u64, len: u64) -> Result<RegionTicket, RegionError> {
        RegionTicket::new(self, offset, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::reversed_empty_ranges)] // reversed on purpose
    fn ranges_resolve_relative_to_the_region() {
        assert_eq!(resolve(2..5, 10), Ok((2, 5)));
        assert_eq!(resolve(..=9, 10), Ok((0, 10)));
        assert_eq!(resolve(3.., 10), Ok((3, 10)));
        assert_eq!(resolve(4..4, 10), Err(RegionError::ZeroLength));
        assert_eq!(
            resolve(7..3, 10),
            Err(RegionError::Reversed { start: 7, end: 3 })
        );
        assert_eq!(
            resolve(20..15, 10),
            Err(RegionError::Reversed { start: 20, end: 15 }),
            "reversed is named before the region's bounds are checked"
        );
        assert_eq!(
            resolve(0..11, 10),
            Err(RegionError::OutOfRegion { at: 11, len: 10 })
        );
        assert!(resolve(..=u64::MAX, 10).is_err());
    }

    #[test]
    fn validation_rejects_empty_and_overflowing_ranges() {
        assert_eq!(validate(0, 0), Err(RegionError::ZeroLength));
        assert_eq!(
            validate(u64::MAX, 2),
            Err(RegionError::Overflow {
                offset: u64::MAX,
                len: 2
            })
        );
        assert!(validate(MAX_END - 1, 1).is_ok());
        assert!(validate(MAX_END, 1).is_err());
    }
}
