//! Sending regions to sockets and pipes: every path byte for byte, non-blocking
//! resumption, hang-ups mid-transfer, and the loan coming back however it ends.

mod io_common;

use fdlend::io::{DirectAlignment, LentRegion, PathBytes, SendError, SendPath, SendProgress};
use fdlend::Lender;
use io_common::{pattern, TempFile};
use nix::errno::Errno;
use std::fs::File;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::thread::JoinHandle;

const SIZE: usize = 1 << 20;

fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (server, client)
}

fn pipe() -> (File, File) {
    let (read, write) = nix::unistd::pipe().unwrap();
    (File::from(read), File::from(write))
}

fn read_all(mut from: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        from.read_to_end(&mut all).unwrap();
        all
    })
}

#[test]
fn std_runs_this_process_with_sigpipe_ignored() {
    // sendfile/splice into a hung-up socket raise SIGPIPE; the typed PeerGone errors
    // below rely on std having set it to SIG_IGN before main, as documented.
    let current = unsafe_sigpipe_disposition();
    assert_eq!(current, libc::SIG_IGN);
}

fn unsafe_sigpipe_disposition() -> libc::sighandler_t {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only queries; `old` is a valid sigaction buffer.
    let rc = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), old.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: sigaction succeeded and filled `old`.
    unsafe { old.assume_init() }.sa_sigaction
}

/// Sends `bytes[offset..offset+len]` through every path to a socket and a pipe,
/// returning the path each start point ended on.
fn every_path(
    lender: &Lender,
    bytes: &[u8],
    offset: u64,
    len: u64,
) -> Vec<(SendPath, &'static str, SendPath, PathBytes)> {
    let mut seen = Vec::new();
    for first in [SendPath::Sendfile, SendPath::Splice, SendPath::ReadWrite] {
        for kind in ["socket", "pipe"] {
            let region = LentRegion::new(lender.loan().unwrap(), offset, len).unwrap();
            let (received, path) = if kind == "socket" {
                let (server, client) = tcp_pair();
                let reader = read_all(client);
                let progress = region.send_via(&server, first).unwrap();
                drop(server);
                (reader.join().unwrap(), progress)
            } else {
                let (read, write) = pipe();
                let reader = read_all(read);
                let progress = region.send_via(&write, first).unwrap();
                drop(write);
                (reader.join().unwrap(), progress)
            };
            let SendProgress::Done {
                sent,
                path,
                by_path,
            } = path
            else {
                panic!("blocking send blocked: {path:?}")
            };
            assert_eq!(sent, len);
            assert!(
                received == bytes[offset as usize..(offset + len) as usize],
                "{first:?} to a {kind}"
            );
            let total: u64 = [SendPath::Sendfile, SendPath::Splice, SendPath::ReadWrite]
                .into_iter()
                .map(|path| by_path.get(path))
                .sum();
            assert_eq!(
                total, len,
                "every byte is counted once, by the path that moved it"
            );
            seen.push((first, kind, path, by_path));
        }
    }
    assert_eq!(lender.outstanding(), 0);
    seen
}

#[test]
fn every_path_sends_the_exact_bytes_to_sockets_and_pipes() {
    let bytes = pattern(SIZE + 333);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let seen = every_path(&lender, &bytes, 77, SIZE as u64);
    println!("regular file: {seen:?}");
    for (first, _, path, _) in seen {
        assert_eq!(
            first, path,
            "the kernel here serves every path from a page-cache file"
        );
    }
    assert!(lender.try_close().is_ok());
}

#[test]
fn o_direct_sources_send_the_exact_bytes_and_report_their_path() {
    let bytes = pattern(SIZE + 333);
    let file = TempFile::with(&bytes);
    let Some(direct) = file.open_direct() else {
        return;
    };
    let lender = Lender::try_from(direct).unwrap();
    let unit = u64::from(
        DirectAlignment::of(lender.ticket().pin().unwrap())
            .unwrap()
            .offset,
    );
    // Unaligned, aligned, and aligned up to a partial last block at end of file: each
    // spans more than one bounce read (1 MiB), so the aligned middle goes by the
    // faster paths and only the ragged edges are copied.
    for (offset, len) in [
        (77, SIZE as u64),
        (4096, SIZE as u64 - 4096),
        (0, SIZE as u64 + 333),
    ] {
        let seen = every_path(&lender, &bytes, offset, len);
        println!("O_DIRECT file, {offset}+{len}: {seen:?}");
        let edges = (unit - offset % unit) % unit + (offset + len) % unit;
        for (first, kind, _, by_path) in seen {
            let copied = by_path.get(SendPath::ReadWrite);
            if first == SendPath::ReadWrite {
                assert_eq!(copied, len, "{first:?} to a {kind}");
            } else {
                assert_eq!(
                    copied, edges,
                    "{offset}+{len} {first:?} to a {kind}: edges only"
                );
            }
        }
    }
    assert!(lender.try_close().is_ok());
}

#[test]
fn an_o_direct_range_within_one_bounce_read_is_copied_whole() {
    let bytes = pattern(256 * 1024);
    let file = TempFile::with(&bytes);
    let Some(direct) = file.open_direct() else {
        return;
    };
    let lender = Lender::try_from(direct).unwrap();
    // Splitting it would take three disk reads (head block, middle, tail block)
    // where one covers it.
    let seen = every_path(&lender, &bytes, 77, 100_000);
    for (first, kind, path, by_path) in seen {
        assert_eq!(path, SendPath::ReadWrite, "{first:?} to a {kind}");
        assert_eq!(by_path.get(SendPath::ReadWrite), 100_000);
    }
    assert!(lender.try_close().is_ok());
}

#[test]
fn a_region_past_end_of_file_sends_what_exists_and_says_so() {
    let bytes = pattern(5000);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    for first in [SendPath::Sendfile, SendPath::Splice, SendPath::ReadWrite] {
        let (server, client) = tcp_pair();
        let reader = read_all(client);
        let region = LentRegion::new(lender.loan().unwrap(), 4000, 3000).unwrap();
        let error = region.send_via(&server, first).unwrap_err();
        drop(server);
        assert_eq!(
            error,
            SendError::SourceEnded {
                sent: 1000,
                wanted: 3000
            },
            "{first:?}"
        );
        assert_eq!(reader.join().unwrap(), &bytes[4000..]);
        assert_eq!(lender.outstanding(), 0);
    }
    assert!(lender.try_close().is_ok());
}

/// A sparse file: big enough to outlast any socket or pipe buffer, cheap to make.
fn big_sparse_file() -> TempFile {
    let file = TempFile::with(b"");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file.path)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    file
}

fn hang_up_after_some(mut reader: impl Read + Send + 'static) -> JoinHandle<usize> {
    std::thread::spawn(move || {
        let mut buf = vec![0; 64 * 1024];
        let mut total = 0;
        while total < 256 * 1024 {
            total += reader.read(&mut buf).unwrap();
        }
        total // dropping `reader` with bytes unread hangs up
    })
}

#[test]
fn a_reader_hanging_up_mid_transfer_is_peer_gone_and_returns_the_loan() {
    let file = big_sparse_file();
    let lender = Lender::try_from(file.open()).unwrap();
    for first in [SendPath::Sendfile, SendPath::Splice, SendPath::ReadWrite] {
        for kind in ["socket", "pipe"] {
            let region = LentRegion::new(lender.loan().unwrap(), 0, 64 << 20).unwrap();
            let (error, got) = if kind == "socket" {
                let (server, client) = tcp_pair();
                let reader = hang_up_after_some(client);
                (
                    region.send_via(&server, first).unwrap_err(),
                    reader.join().unwrap(),
                )
            } else {
                let (read, write) = pipe();
                let reader = hang_up_after_some(read);
                (
                    region.send_via(&write, first).unwrap_err(),
                    reader.join().unwrap(),
                )
            };
            let SendError::PeerGone { sent, errno } = error else {
                panic!("{first:?} to a {kind}: {error:?}")
            };
            assert!(matches!(errno, Errno::EPIPE | Errno::ECONNRESET));
            assert!(
                sent >= got as u64 && sent < 64 << 20,
                "{first:?} to a {kind}: sent {sent}, read {got}"
            );
            assert_eq!(
                lender.outstanding(),
                0,
                "{first:?} to a {kind}: the failed send returned its loan"
            );
        }
    }
    assert!(
        lender.try_close().is_ok(),
        "nothing leaked: the file closes at once"
    );
}

fn wait_writable(fd: std::os::fd::BorrowedFd<'_>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::NONE).unwrap();
}

#[test]
fn non_blocking_destinations_block_and_resume_until_done() {
    let bytes = pattern(8 << 20);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    for first in [SendPath::Sendfile, SendPath::Splice, SendPath::ReadWrite] {
        let (server, client) = tcp_pair();
        server.set_nonblocking(true).unwrap();
        // Fixed small buffers (no autotuning), so 8 MiB cannot fit in flight.
        nix::sys::socket::setsockopt(&server, nix::sys::socket::sockopt::SndBuf, &(64 * 1024))
            .unwrap();
        nix::sys::socket::setsockopt(&client, nix::sys::socket::sockopt::RcvBuf, &(64 * 1024))
            .unwrap();
        let region = LentRegion::new(lender.loan().unwrap(), 3, (8 << 20) - 3).unwrap();
        // Nobody reads yet, so the socket fills and the send must block.
        let progress = region.send_via(&server, first).unwrap();
        let SendProgress::Blocked {
            sent,
            mut rest,
            path,
            by_path,
        } = progress
        else {
            panic!("{first:?}: {progress:?}")
        };
        assert_eq!(path, first);
        assert_eq!(by_path.get(first), sent, "one path moved every byte");
        assert_eq!(rest.offset(), 3 + sent);
        assert_eq!(lender.outstanding(), 1, "the rest holds the loan");
        let reader = read_all(client);
        let mut blocked = 1;
        loop {
            wait_writable(server.as_fd());
            match rest.send_via(&server, first).unwrap() {
                SendProgress::Done { .. } => break,
                SendProgress::Blocked { rest: more, .. } => {
                    blocked += 1;
                    rest = more;
                }
            }
        }
        drop(server);
        assert!(
            reader.join().unwrap() == bytes[3..],
            "{first:?} after {blocked} resumptions"
        );
        assert_eq!(lender.outstanding(), 0);
    }
    assert!(lender.try_close().is_ok());
}

#[test]
fn giving_up_on_a_blocked_send_returns_the_loan() {
    let file = big_sparse_file();
    let lender = Lender::try_from(file.open()).unwrap();
    let (server, _client) = tcp_pair();
    server.set_nonblocking(true).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 0, 64 << 20).unwrap();
    let progress = region.send_to(&server).unwrap();
    assert!(matches!(progress, SendProgress::Blocked { .. }));
    assert_eq!(lender.outstanding(), 1);
    drop(progress);
    assert_eq!(lender.outstanding(), 0);
    assert!(lender.try_close().is_ok());
}

/// Every path refuses an unaligned write to an O_DIRECT file (EINVAL); the last path
/// has nothing to fall back to, so the send must fail with a typed error, not panic,
/// and its loan must come back.
#[test]
fn an_unwritable_destination_is_a_typed_error_on_the_last_path() {
    use std::os::unix::fs::OpenOptionsExt;
    let source = TempFile::with(&pattern(10_000));
    let lender = Lender::try_from(source.open()).unwrap();
    let target = TempFile::with(b"");
    let Ok(out) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&target.path)
    else {
        println!("SKIP: no O_DIRECT on {}", target.path.display());
        return;
    };
    let region = LentRegion::new(lender.loan().unwrap(), 1, 100).unwrap();
    match region.send_to(&out) {
        Err(SendError::Io { path, errno, .. }) => {
            assert_eq!((path, errno), (SendPath::ReadWrite, Errno::EINVAL));
        }
        other => panic!("expected EINVAL on the read+write path, got {other:?}"),
    }
    assert_eq!(lender.outstanding(), 0, "the failed send returned its loan");
    assert!(lender.try_close().is_ok());
}

/// The kernel refuses an O_DIRECT read whose end passes `i64::MAX`, so the last
/// aligned block below it cannot be read; there (far past any file's end) reads and
/// sends say end of file, as buffered ones do, and never `EINVAL`.
#[test]
fn an_o_direct_region_at_the_largest_offset_is_past_end_of_file() {
    let file = TempFile::with(&pattern(4096));
    let Some(direct) = file.open_direct() else {
        return;
    };
    let lender = Lender::try_from(direct).unwrap();
    let last = i64::MAX as u64 - 2;
    for first in [SendPath::Sendfile, SendPath::Splice, SendPath::ReadWrite] {
        let region = LentRegion::new(lender.loan().unwrap(), last, 2).unwrap();
        assert_eq!(region.read_at(0, &mut [0; 2]), Ok(0), "read");
        let (read, write) = pipe();
        let error = region.send_via(&write, first).unwrap_err();
        assert_eq!(
            error,
            SendError::SourceEnded { sent: 0, wanted: 2 },
            "{first:?}"
        );
        drop((read, write));
    }
    assert!(lender.try_close().is_ok());
}
