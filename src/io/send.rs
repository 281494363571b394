//! Sending a [`LentRegion`] to a socket or pipe: `sendfile(2)` first, then
//! `splice(2)`, then a read+write copy, whichever the kernel lets serve; resumable
//! on non-blocking destinations. A range of an O_DIRECT file is sent without the
//! calls the kernel refuses for it: its ragged head and tail by copy, its aligned
//! middle by splice or sendfile (or, when one disk read covers it all, by copy).

use super::direct::{forget_direct, known_direct, learn_direct, DirectAlignment};
use super::error::{RegionError, SendError, SendPath};
use super::read::BOUNCE_MAX;
use super::region::LentRegion;
use super::send_paths::{Cursor, PathBytes, Step, ORDER};
use crate::Ticket;
use nix::errno::Errno;
use std::os::fd::AsFd;

/// Where a send stands after [`LentRegion::send_to`] returns without an error.
#[derive(Debug)]
#[must_use = "a blocked send holds the rest of the region (and its loan) until resumed or dropped"]
pub enum SendProgress {
    /// Every byte of the region was sent; its loan is returned.
    Done {
        /// The region's length.
        sent: u64,
        /// The path that moved most of the bytes.
        path: SendPath,
        /// The bytes each path moved (an O_DIRECT range's ragged edges go by copy).
        by_path: PathBytes,
    },
    /// The destination is non-blocking and full. Wait until it is writable, then
    /// resume with `rest.send_to(...)` (or drop `rest` to give up; that returns the
    /// loan).
    Blocked {
        /// Bytes sent by this call.
        sent: u64,
        /// The part not sent yet, still holding the loan.
        rest: LentRegion,
        /// The path that moved most of the bytes (the one running if none moved).
        path: SendPath,
        /// The bytes each path moved in this call.
        by_path: PathBytes,
    },
}

/// Sends longer than this ask whether an unknown source is O_DIRECT before the first
/// call: the size of sendfile's internal pipe (16 pages), beyond which sendfile from
/// an O_DIRECT file takes a disk round trip per 64 KiB.
const ASK_DIRECT_ABOVE: u64 = 64 * 1024;

/// The paths from `first` on.
fn paths_from(first: SendPath) -> &'static [SendPath] {
    let start = ORDER.iter().position(|&path| path == first).unwrap_or(0);
    &ORDER[start..]
}

/// Sends `[cursor.pos, end)` of a file not known to be O_DIRECT: each path in turn
/// from `first`. The first refusal asks whether the file is O_DIRECT (the usual
/// reason: an unaligned offset); if it is, the rest is sent split by its alignment.
fn send_plain(cursor: &mut Cursor<'_>, end: u64, first: SendPath, ticket: Ticket) -> Step {
    let mut asked = false;
    for &path in paths_from(first) {
        match cursor.run(path, end) {
            Step::Unsupported => {
                if !asked {
                    asked = true;
                    match learn_direct(ticket, cursor.src) {
                        Ok(Some(align)) => return send_direct(cursor, end, first, align),
                        Ok(None) => {}
                        Err(error) => return read_failed(cursor, error),
                    }
                }
            }
            step => return step,
        }
    }
    // Only the copy's read refuses last (EINVAL from a file that is not O_DIRECT).
    read_failed(cursor, super::read::io(Errno::EINVAL))
}

fn read_failed(cursor: &Cursor<'_>, error: RegionError) -> Step {
    Step::Failed(SendError::Read {
        sent: cursor.sent,
        error,
    })
}

/// Sends `[cursor.pos, end)` of an O_DIRECT file, making no call the kernel is
/// known to refuse (sendfile and splice say `EINVAL` at unaligned offsets):
///
/// - A range with ragged edges whose aligned span fits one bounce read
///   (`BOUNCE_MAX`, 1 MiB) is copied whole: one disk read, where splitting it would
///   take three (head block, middle, tail block), each a round trip to the device.
/// - Otherwise the ragged head and tail (less than a block each) are copied through
///   an aligned bounce buffer and the aligned middle goes by `splice` through the
///   thread's 1 MiB pipe, then `sendfile`: from an O_DIRECT file each file-to-pipe
///   step is one disk read of the pipe's free space, and sendfile's internal pipe has
///   only 16 pages (a disk round trip per 64 KiB). Sendfile needs no fd of ours, so
///   it serves when no pipe can be made.
/// - `first == ReadWrite` copies everything; `first == Splice` skips sendfile.
fn send_direct(cursor: &mut Cursor<'_>, end: u64, first: SendPath, align: DirectAlignment) -> Step {
    let unit = u64::from(align.offset);
    let middle_start = cursor.pos.div_ceil(unit).saturating_mul(unit).min(end);
    let middle_end = (end / unit * unit).max(middle_start);
    let ragged = cursor.pos % unit != 0 || end % unit != 0;
    let span = end.div_ceil(unit) * unit - cursor.pos / unit * unit;
    if first == SendPath::ReadWrite
        || middle_start == middle_end
        || (ragged && span <= BOUNCE_MAX.max(unit))
    {
        return cursor.copy(end, Some(align));
    }
    if cursor.pos < middle_start {
        let step = cursor.copy(middle_start, Some(align));
        if !matches!(step, Step::Finished) {
            return step;
        }
    }
    cursor.big_pipe = true;
    let middle_paths: &[SendPath] = match first {
        SendPath::Sendfile => &[SendPath::Splice, SendPath::Sendfile],
        _ => &[SendPath::Splice],
    };
    for &path in middle_paths {
        match cursor.run(path, middle_end) {
            Step::Finished => break,
            // A short read (the file's end inside a block) left the offset unaligned:
            // the faster paths would refuse it too.
            Step::Unsupported if cursor.pos % unit != 0 => break,
            Step::Unsupported => continue,
            step => return step,
        }
    }
    cursor.copy(end, Some(align))
}

impl LentRegion {
    /// Sends the region to `out` (a socket, a pipe, or any writable fd), starting
    /// with `sendfile`.
    ///
    /// Blocking destinations get everything or an error. Non-blocking ones may return
    /// [`SendProgress::Blocked`] with the rest of the region to resume once `out` is
    /// writable. The region's loan is returned however this ends, except inside
    /// `Blocked`, which hands it back to the caller.
    ///
    /// It never fails for want of an fd: `splice` into a non-pipe borrows the
    /// thread's spare pipe (made once, kept, see
    /// [`release_thread_pipe`](super::release_thread_pipe)), and when no pipe can be
    /// made (`EMFILE`) a path that needs none serves instead. On an O_DIRECT file no
    /// call is made that the kernel refuses for unaligned offsets: a range spanning
    /// more than one bounce read (1 MiB) has only its unaligned edges copied and its
    /// aligned middle spliced (or sent with sendfile); a smaller unaligned one is
    /// copied with one aligned read. [`SendProgress`] says how many bytes each path
    /// moved.
    ///
    /// `sendfile` and `splice` raise `SIGPIPE` on a hung-up socket or pipe like
    /// `write` does. Rust programs ignore `SIGPIPE` from the start (std sets it to
    /// `SIG_IGN` before `main`), so it shows as [`SendError::PeerGone`]; a program that
    /// restored the default must ignore it again before sending.
    pub fn send_to(self, out: impl AsFd) -> Result<SendProgress, SendError> {
        self.send_via(out, SendPath::Sendfile)
    }

    /// As [`send_to`](LentRegion::send_to), starting at `first` in the order
    /// sendfile → splice → read+write: for destinations known to refuse the faster
    /// paths, and for testing each path.
    pub fn send_via(self, out: impl AsFd, first: SendPath) -> Result<SendProgress, SendError> {
        let ticket = self.loan().ticket();
        let mut cursor = Cursor::new(self.as_fd(), out.as_fd(), self.offset());
        // Big sends ask up front whether an unknown file is O_DIRECT (one fcntl, small
        // beside the transfer): its aligned ranges are faster by the pooled pipe than
        // by sendfile, which the kernel would serve without refusing.
        let direct = match known_direct(ticket) {
            Some(align) => Some(align),
            None if self.len() > ASK_DIRECT_ABOVE => match learn_direct(ticket, self.as_fd()) {
                Ok(direct) => direct,
                Err(error) => return Err(SendError::Read { sent: 0, error }),
            },
            None => None,
        };
        let step = match direct {
            Some(align) => send_direct(&mut cursor, self.end(), first, align),
            None => send_plain(&mut cursor, self.end(), first, ticket),
        };
        let (sent, by_path) = (cursor.sent, cursor.by_path);
        let path = by_path.most().unwrap_or(cursor.running);
        match step {
            Step::Finished => Ok(SendProgress::Done {
                sent,
                path,
                by_path,
            }),
            Step::Blocked => Ok(match self.advance(sent) {
                Some(rest) => SendProgress::Blocked {
                    sent,
                    rest,
                    path,
                    by_path,
                },
                None => SendProgress::Done {
                    sent,
                    path,
                    by_path,
                },
            }),
            Step::Eof => Err(SendError::SourceEnded {
                sent,
                wanted: self.len(),
            }),
            Step::Failed(error) => {
                // A remembered alignment the kernel now refuses is learned afresh by
                // the next read or send of this file.
                if let SendError::Read {
                    error:
                        RegionError::Io {
                            errno: Errno::EINVAL,
                            ..
                        },
                    ..
                } = error
                {
                    forget_direct(ticket);
                }
                Err(error)
            }
            // Every path below turns its last refusal into `Failed`.
            Step::Unsupported => Err(SendError::Io {
                sent,
                path,
                errno: Errno::EINVAL,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_bytes_name_the_path_that_moved_most_and_every_path_that_ran() {
        let mut moved = PathBytes::default();
        assert_eq!((moved.most(), moved.ran().count()), (None, 0));
        moved.add(SendPath::ReadWrite, 512);
        moved.add(SendPath::Splice, 1 << 20);
        moved.add(SendPath::ReadWrite, 77);
        assert_eq!(moved.most(), Some(SendPath::Splice));
        assert_eq!(moved.get(SendPath::ReadWrite), 589);
        assert_eq!(moved.get(SendPath::Sendfile), 0);
        let ran: Vec<SendPath> = moved.ran().collect();
        assert_eq!(ran, [SendPath::Splice, SendPath::ReadWrite]);
        let mut tie = PathBytes::default();
        tie.add(SendPath::ReadWrite, 10);
        tie.add(SendPath::Sendfile, 10);
        assert_eq!(
            tie.most(),
            Some(SendPath::Sendfile),
            "a tie names the faster path"
        );
    }

    #[test]
    fn paths_run_from_the_first_asked_in_order() {
        assert_eq!(paths_from(SendPath::Sendfile), ORDER);
        assert_eq!(
            paths_from(SendPath::Splice),
            [SendPath::Splice, SendPath::ReadWrite]
        );
        assert_eq!(paths_from(SendPath::ReadWrite), [SendPath::ReadWrite]);
    }
}
