//! [`BorrowSource`]: the loan a reader on another executor holds.

use crate::{LentRegion, Loan};

/// What a reader on another executor ([`BlockingReader`](super::BlockingReader),
/// or `BorrowedDmaFile` with the `glommio-ring` feature) holds to keep the fd open:
/// a whole-file loan or a region (whose loan covers the whole fd; the range is for
/// its `read_region`).
#[derive(Debug)]
pub enum BorrowSource {
    /// A loan of the fd.
    Loan(Loan),
    /// A lent byte range of the fd.
    Region(LentRegion),
}

impl BorrowSource {
    /// The loan that keeps the fd open.
    pub fn loan(&self) -> &Loan {
        match self {
            BorrowSource::Loan(loan) => loan,
            BorrowSource::Region(region) => region.loan(),
        }
    }
}

impl From<Loan> for BorrowSource {
    fn from(loan: Loan) -> BorrowSource {
        BorrowSource::Loan(loan)
    }
}

impl From<LentRegion> for BorrowSource {
    fn from(region: LentRegion) -> BorrowSource {
        BorrowSource::Region(region)
    }
}

/// The largest end of a read: file offsets are `loff_t`, a signed 64-bit number.
const MAX_END: u64 = i64::MAX as u64;

/// Checks a read of `size` bytes at `pos` and returns the `align`-aligned read that
/// covers it, as `(start, span, skip)`: `span` bytes from `start`, of which the
/// asked ones begin `skip` bytes in. `InvalidInput` (never an overflow panic) for a
/// range that ends past the largest file offset, or a span that does not fit in
/// memory. `align` is a power of two (glommio's alignment, or 1).
pub(super) fn covering(pos: u64, size: usize, align: u64) -> std::io::Result<(u64, usize, usize)> {
    let invalid = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("read of {size} bytes at {pos}: {what}"),
        )
    };
    debug_assert!(align.is_power_of_two(), "alignment {align}");
    let end = pos
        .checked_add(size as u64)
        .filter(|&end| end <= MAX_END)
        .ok_or_else(|| invalid("ends past the largest file offset"))?;
    let start = pos & !(align - 1);
    // `end <= i64::MAX`, so rounding up by less than 2^63 cannot overflow a u64.
    let aligned_end = (end + (align - 1)) & !(align - 1);
    let span = usize::try_from(aligned_end - start)
        .ok()
        .filter(|&span| span <= isize::MAX as usize)
        .ok_or_else(|| invalid("larger than this machine's address space"))?;
    Ok((start, span, (pos - start) as usize))
}

#[cfg(test)]
mod tests {
    use super::covering;

    #[test]
    fn covering_rounds_out_to_the_alignment() {
        assert_eq!(covering(4097, 10, 4096).unwrap(), (4096, 4096, 1));
        assert_eq!(covering(4095, 2, 4096).unwrap(), (0, 8192, 4095));
        assert_eq!(covering(5, 0, 512).unwrap(), (0, 512, 5));
        assert_eq!(covering(7, 3, 1).unwrap(), (7, 3, 0));
    }

    #[test]
    fn covering_refuses_what_overflows() {
        for (pos, size) in [
            (1, usize::MAX),
            (u64::MAX, 1),
            (i64::MAX as u64, 1),
            (0, usize::MAX),
        ] {
            let error = covering(pos, size, 4096).unwrap_err();
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::InvalidInput,
                "{pos} {size}"
            );
        }
        // The largest offset a file can have still reads (aligned up within u64).
        assert!(covering(i64::MAX as u64 - 1, 1, 4096).is_ok());
    }
}
