//! The iovecs of a [`BorrowedDmaFile::read_many`](super::BorrowedDmaFile::read_many),
//! checked before glommio sees them: glommio 0.9 adds positions and sizes unchecked
//! while merging, so a range that overflows would panic inside it.

use super::source::covering;
use ::glommio::io::IoVec;
use futures_core::Stream;
use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

/// The first refused iovec, `(pos, size)`, shared with the results stream.
pub(super) type Refused = Rc<Cell<Option<(u64, usize)>>>;

/// Passes iovecs through until the first whose range overflows a file offset, which
/// it records in `refused` and ends the stream at.
pub(super) struct CheckedIovs<S> {
    inner: S,
    refused: Refused,
    ended: bool,
}

impl<S> CheckedIovs<S> {
    pub(super) fn new(inner: S, refused: Refused) -> CheckedIovs<S> {
        CheckedIovs {
            inner,
            refused,
            ended: false,
        }
    }
}

impl<V: IoVec, S: Stream<Item = V> + Unpin> Stream for CheckedIovs<S> {
    type Item = V;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<V>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let next = std::task::ready!(Pin::new(&mut self.inner).poll_next(cx));
        match next {
            Some(iov) if covering(iov.pos(), iov.size(), 1).is_err() => {
                self.refused.set(Some((iov.pos(), iov.size())));
                self.ended = true;
                Poll::Ready(None)
            }
            next => Poll::Ready(next),
        }
    }
}

/// The error [`ReadMany`](super::ReadMany) yields, last, for a refused iovec.
pub(super) fn refused_error(pos: u64, size: usize) -> std::io::Error {
    covering(pos, size, 1).expect_err("fdlend: refused because it overflows")
}
