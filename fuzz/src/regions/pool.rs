//! The live regions of one input and the steps that make, split and drop them, each
//! outcome predicted from the range arithmetic and the loans counted so far.

use super::env::{Env, FILE_LEN, MAX_LOANS};
use super::{End, Fd, Num, Op};
use fdlend::io::{LentRegion, RegionError, RegionTicket};
use std::ops::Bound;

/// The largest region end (`off_t`).
const MAX_END: u64 = i64::MAX as u64;
/// Reads and sends of O_DIRECT regions per input: each costs a disk round trip
/// (~100 µs here, ~0.5 ms for a megabyte), which would otherwise set the pace.
const MAX_DIRECT_IO: usize = 4;
/// Pieces checked per `chunks` call when they are dropped as they come.
const MAX_PIECES: usize = 64;

pub(super) struct Held {
    pub region: LentRegion,
    pub fd: Fd,
}

pub struct Pool<'e> {
    pub(super) env: &'e Env,
    pub(super) held: Vec<Held>,
    /// Reads and sends left for O_DIRECT regions in this input.
    direct_io: usize,
}

/// What `LentRegion::new` and `RegionTicket::new` must say about a range.
fn validate(offset: u64, len: u64) -> Result<(), RegionError> {
    if len == 0 {
        Err(RegionError::ZeroLength)
    } else if u128::from(offset) + u128::from(len) > u128::from(MAX_END) {
        Err(RegionError::Overflow { offset, len })
    } else {
        Ok(())
    }
}

/// A new region's range: the length counts from the offset to end of file.
fn absolute(offset: Num, len: Num) -> (u64, u64) {
    let offset = offset.value(FILE_LEN);
    (offset, len.value(FILE_LEN.saturating_sub(offset)))
}

fn bound(end: End, len: u64) -> Bound<u64> {
    match end {
        End::Included(n) => Bound::Included(n.value(len)),
        End::Excluded(n) => Bound::Excluded(n.value(len)),
        End::Unbounded => Bound::Unbounded,
    }
}

/// What `slice` must resolve `(start, end)` to in a region of `len` bytes: each
/// bound must exist as a `u64`, then the order is checked (reversed), then the end
/// against the region, then emptiness.
fn resolve(start: Bound<u64>, end: Bound<u64>, len: u64) -> Result<(u64, u64), RegionError> {
    let out = |at: u128| RegionError::OutOfRegion {
        at: u64::try_from(at).unwrap_or(u64::MAX),
        len,
    };
    let start = match start {
        Bound::Included(at) => u128::from(at),
        Bound::Excluded(at) => u128::from(at) + 1,
        Bound::Unbounded => 0,
    };
    if start > u128::from(u64::MAX) {
        return Err(out(start));
    }
    let end = match end {
        Bound::Included(at) => u128::from(at) + 1,
        Bound::Excluded(at) => u128::from(at),
        Bound::Unbounded => u128::from(len),
    };
    if end > u128::from(u64::MAX) {
        return Err(out(end));
    }
    if start > end {
        return Err(RegionError::Reversed {
            start: start as u64,
            end: end as u64,
        });
    }
    if end > u128::from(len) {
        return Err(out(end));
    }
    if start == end {
        return Err(RegionError::ZeroLength);
    }
    Ok((start as u64, end as u64))
}

fn same<T, U>(got: &Result<T, RegionError>, want: &Result<U, RegionError>) -> bool {
    match (got, want) {
        (Ok(_), Ok(_)) => true,
        (Err(got), Err(want)) => got == want,
        _ => false,
    }
}

impl<'e> Pool<'e> {
    pub fn new(env: &'e Env) -> Pool<'e> {
        Pool {
            env,
            held: Vec::new(),
            direct_io: MAX_DIRECT_IO,
        }
    }

    fn live(&self, fd: Fd) -> usize {
        self.held.iter().filter(|held| held.fd == fd).count()
    }

    /// `Saturated` if `fd` has no loan left to count.
    fn room(&self, fd: Fd) -> Result<(), RegionError> {
        if self.live(fd) < MAX_LOANS as usize {
            Ok(())
        } else {
            Err(RegionError::Saturated {
                fd: self.env.raw(fd),
                limit: MAX_LOANS,
            })
        }
    }

    pub(super) fn pick(&self, choice: u8) -> Option<usize> {
        (!self.held.is_empty()).then(|| usize::from(choice) % self.held.len())
    }

    /// As [`pick`](Pool::pick), for a read or send: none once this input has spent
    /// its O_DIRECT budget and the pick is an O_DIRECT region.
    pub(super) fn pick_io(&mut self, choice: u8) -> Option<usize> {
        let i = self.pick(choice)?;
        if self.held[i].fd == Fd::Direct {
            self.direct_io = self.direct_io.checked_sub(1)?;
        }
        Some(i)
    }

    /// Adds a region that must cover `offset..offset + len`.
    fn keep(&mut self, region: LentRegion, fd: Fd, offset: u64, len: u64) {
        assert_eq!(
            (region.offset(), region.len(), region.end()),
            (offset, len, offset + len),
            "{region:?}"
        );
        self.held.push(Held { region, fd });
    }

    /// Every lender counts exactly the regions alive on it.
    pub fn check_counts(&self) {
        for fd in [Fd::Buffered, Fd::Direct] {
            assert_eq!(
                self.env.lender(fd).outstanding(),
                self.live(fd),
                "{fd:?} loans outstanding vs regions alive"
            );
        }
    }

    /// Drops every region: no loan may be left.
    pub fn finish(mut self) {
        self.held.clear();
        self.check_counts();
    }

    pub fn step(&mut self, op: Op) {
        match op {
            Op::New { fd, offset, len } => self.new_region(fd, offset, len),
            Op::PinNew { fd, offset, len } => self.pin_new(fd, offset, len),
            Op::Repin { region } => self.repin(region),
            Op::SplitAt { region, at } => self.split_at(region, at),
            Op::Slice { region, start, end } => self.slice(region, start, end),
            Op::Chunks {
                region,
                chunk,
                keep,
            } => self.chunks(region, chunk, keep),
            Op::Advance { region, n } => self.advance(region, n),
            Op::Read {
                region,
                kind,
                at,
                buf,
            } => self.read(region, kind, at, buf),
            Op::ReadToEnd { region, prefix } => self.read_to_end(region, prefix),
            Op::ReadToVec { region } => self.read_to_vec(region),
            Op::Send { region, first } => self.send(region, first),
            Op::Drop { region } => {
                if let Some(i) = self.pick(region) {
                    self.held.swap_remove(i);
                }
            }
        }
    }

    fn new_region(&mut self, fd: Fd, offset: Num, len: Num) {
        let (offset, len) = absolute(offset, len);
        let loan = self.env.lender(fd).loan().map_err(RegionError::from);
        let want = self.room(fd).and_then(|()| validate(offset, len));
        let got = loan.and_then(|loan| LentRegion::new(loan, offset, len));
        assert!(
            same(&got, &want),
            "new({offset}, {len}): {got:?}, want {want:?}"
        );
        if let Ok(region) = got {
            self.keep(region, fd, offset, len);
        }
    }

    fn pin_new(&mut self, fd: Fd, offset: Num, len: Num) {
        let (offset, len) = absolute(offset, len);
        let ticket = RegionTicket::new(self.env.lender(fd).ticket(), offset, len);
        let want = validate(offset, len);
        assert!(
            same(&ticket, &want),
            "RegionTicket::new({offset}, {len}): {ticket:?}, want {want:?}"
        );
        if let Ok(ticket) = ticket {
            assert_eq!((ticket.offset(), ticket.len()), (offset, len));
            self.pin(ticket, fd);
        }
    }

    fn pin(&mut self, ticket: RegionTicket, fd: Fd) {
        let want = self.room(fd);
        let got = ticket.pin();
        assert!(same(&got, &want), "pin {ticket:?}: {got:?}, want {want:?}");
        if let Ok(region) = got {
            self.keep(region, fd, ticket.offset(), ticket.len());
        }
    }

    fn repin(&mut self, choice: u8) {
        let Some(i) = self.pick(choice) else { return };
        let Held { region, fd } = &self.held[i];
        let (ticket, fd) = (region.ticket(), *fd);
        assert_eq!(
            (ticket.offset(), ticket.len()),
            (region.offset(), region.len())
        );
        self.pin(ticket, fd);
    }

    fn split_at(&mut self, choice: u8, at: Num) {
        let Some(i) = self.pick(choice) else { return };
        let Held { region, fd } = self.held.swap_remove(i);
        let (offset, len) = (region.offset(), region.len());
        let at = at.value(len);
        let want = if at == 0 {
            Err(RegionError::ZeroLength)
        } else if at >= len {
            Err(RegionError::OutOfRegion { at, len })
        } else {
            // The region being split is out of the pool but still counted.
            self.room_with(fd, 1)
        };
        let got = region.split_at(at);
        assert!(
            same(&got, &want),
            "split_at({at}) of {offset}+{len}: {got:?}, want {want:?}"
        );
        if let Ok((head, tail)) = got {
            self.keep(head, fd, offset, at);
            self.keep(tail, fd, offset + at, len - at);
        }
    }

    /// As [`room`](Pool::room), with `extra` regions out of the pool still counted.
    fn room_with(&self, fd: Fd, extra: usize) -> Result<(), RegionError> {
        if self.live(fd) + extra < MAX_LOANS as usize {
            Ok(())
        } else {
            Err(RegionError::Saturated {
                fd: self.env.raw(fd),
                limit: MAX_LOANS,
            })
        }
    }

    fn slice(&mut self, choice: u8, start: End, end: End) {
        let Some(i) = self.pick(choice) else { return };
        let Held { region, fd } = &self.held[i];
        let (offset, len, fd) = (region.offset(), region.len(), *fd);
        let range = (bound(start, len), bound(end, len));
        let want = resolve(range.0, range.1, len);
        let got = region.slice(range);
        let want = want.and_then(|span| self.room(fd).map(|()| span));
        assert!(
            same(&got, &want),
            "slice({range:?}) of {offset}+{len}: {got:?}, want {want:?}"
        );
        if let (Ok(sub), Ok((start, end))) = (got, want) {
            self.keep(sub, fd, offset + start, end - start);
        }
    }

    fn advance(&mut self, choice: u8, n: Num) {
        let Some(i) = self.pick(choice) else { return };
        let Held { region, fd } = self.held.swap_remove(i);
        let (offset, len) = (region.offset(), region.len());
        let n = n.value(len);
        match region.advance(n) {
            Some(rest) => {
                assert!(n < len, "advance({n}) of {len} bytes left {rest:?}");
                self.keep(rest, fd, offset + n, len - n);
            }
            None => assert!(n >= len, "advance({n}) of {len} bytes left nothing"),
        }
    }

    /// The pieces must tile the region in order: `chunk` bytes each, the last what is
    /// left; the iterator stops with `Saturated` when a piece's loan cannot be counted.
    fn chunks(&mut self, choice: u8, chunk: Num, keep: bool) {
        let Some(i) = self.pick(choice) else { return };
        let Held { region, fd } = self.held.swap_remove(i);
        let (offset, len) = (region.offset(), region.len());
        let chunk = chunk.value(len);
        let chunks = match region.chunks(chunk) {
            Ok(chunks) => chunks,
            Err(error) => {
                assert_eq!((chunk, error), (0, RegionError::ZeroLength));
                return;
            }
        };
        assert_ne!(chunk, 0, "chunks(0) was accepted");
        let n = len.div_ceil(chunk) as usize;
        assert_eq!(
            chunks.size_hint(),
            (n.min(1), Some(n)),
            "chunks({chunk}) of {len}"
        );
        let mut chunks = chunks;
        let mut pieces = Vec::new();
        let mut at = 0;
        let mut index = 0;
        let mut stopped = false;
        while let Some(piece) = chunks.next() {
            assert!(at < len, "piece {index} after the region's end: {piece:?}");
            let size = chunk.min(len - at);
            // The rest of the region is out of the pool but still counted.
            let want = if at + size == len {
                Ok(())
            } else {
                self.room_with(fd, 1 + pieces.len())
            };
            assert!(
                same(&piece, &want),
                "piece {index} at {at}: {piece:?}, want {want:?}"
            );
            let Ok(piece) = piece else {
                assert!(chunks.next().is_none(), "chunks went on after an error");
                stopped = true;
                break;
            };
            assert_eq!((piece.offset(), piece.len()), (offset + at, size));
            at += size;
            index += 1;
            if keep {
                pieces.push(piece);
            } else if index == MAX_PIECES {
                // Dropping the iterator returns the rest's loan.
                stopped = true;
                break;
            }
            if at == len {
                assert!(chunks.next().is_none(), "chunks went past the region's end");
                break;
            }
        }
        assert!(
            stopped || at == len,
            "chunks of {offset}+{len} ended at {at}"
        );
        let fd_pieces = pieces.into_iter().map(|region| Held { region, fd });
        self.held.extend(fd_pieces);
    }
}
