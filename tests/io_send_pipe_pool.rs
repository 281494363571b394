//! The splice path's pipe is pooled per thread: made once, reused by every later
//! send, never more than one per thread, closed with its thread, and thrown away
//! (not reused) when a send stops with bytes still in it. One test in its own binary,
//! because it counts the process's pipes in `/proc/self/fd`.

mod io_common;

use fdlend::io::{release_thread_pipe, LentRegion, SendPath, SendProgress};
use fdlend::Lender;
use io_common::{pattern, TempFile};
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::thread::JoinHandle;

/// The fds of this process that are pipe ends.
fn pipe_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}

fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (server, client)
}

fn read_all(mut from: TcpStream) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut all = Vec::new();
        from.read_to_end(&mut all).unwrap();
        all
    })
}

fn splice_all(lender: &Lender, offset: u64, len: u64, out: &TcpStream) {
    let region = LentRegion::new(lender.loan().unwrap(), offset, len).unwrap();
    match region.send_via(out, SendPath::Splice).unwrap() {
        SendProgress::Done { by_path, .. } => assert_eq!(by_path.get(SendPath::Splice), len),
        blocked => panic!("a blocking socket blocked: {blocked:?}"),
    }
}

#[test]
fn one_pipe_per_thread_reused_and_discarded_when_a_send_leaves_bytes_in_it() {
    let bytes = pattern(8 << 20);
    let file = TempFile::with(&bytes);
    let lender = Lender::try_from(file.open()).unwrap();
    let base = pipe_fds();

    // A hundred splice sends into a socket: one pipe (two fds), kept.
    let (server, client) = tcp_pair();
    let reader = read_all(client);
    for i in 0..100u64 {
        splice_all(&lender, i * 10_000, 10_000, &server);
        assert_eq!(pipe_fds(), base + 2, "send {i}: one pipe, reused");
    }
    drop(server);
    assert!(reader.join().unwrap() == bytes[..1_000_000]);

    // Another thread gets its own, closed when the thread ends.
    let region = LentRegion::new(lender.loan().unwrap(), 3, 50_000).unwrap();
    let other = std::thread::spawn(move || {
        let (server, client) = tcp_pair();
        let reader = read_all(client);
        let progress = region.send_via(&server, SendPath::Splice).unwrap();
        assert!(matches!(
            progress,
            SendProgress::Done {
                sent: 50_000,
                path: SendPath::Splice,
                ..
            }
        ));
        assert_eq!(pipe_fds(), base + 4, "one pipe per thread");
        drop(server);
        reader.join().unwrap()
    });
    assert!(other.join().unwrap() == bytes[3..50_003]);
    assert_eq!(
        pipe_fds(),
        base + 2,
        "the other thread's pipe closed with it"
    );

    // A send that blocks with bytes in the pipe: that pipe is closed, not reused, so
    // the bytes never reach another send's destination; the resumed send reads them
    // again from the file.
    let (server, client) = tcp_pair();
    server.set_nonblocking(true).unwrap();
    nix::sys::socket::setsockopt(&server, nix::sys::socket::sockopt::SndBuf, &(64 * 1024)).unwrap();
    nix::sys::socket::setsockopt(&client, nix::sys::socket::sockopt::RcvBuf, &(64 * 1024)).unwrap();
    let region = LentRegion::new(lender.loan().unwrap(), 11, (8 << 20) - 11).unwrap();
    let SendProgress::Blocked { mut rest, .. } =
        region.send_via(&server, SendPath::Splice).unwrap()
    else {
        panic!("8 MiB fit in a 64 KiB socket buffer")
    };
    assert_eq!(
        pipe_fds(),
        base,
        "the pipe with unsent bytes in it was closed"
    );
    let reader = read_all(client);
    loop {
        let mut fds = [nix::poll::PollFd::new(
            server.as_fd(),
            nix::poll::PollFlags::POLLOUT,
        )];
        nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE).unwrap();
        match rest.send_via(&server, SendPath::Splice).unwrap() {
            SendProgress::Done { .. } => break,
            SendProgress::Blocked { rest: more, .. } => rest = more,
        }
        assert!(pipe_fds() <= base + 2, "never more than one pipe");
    }
    drop(server);
    assert!(
        reader.join().unwrap() == bytes[11..],
        "no byte left in a discarded pipe reached the socket, none was lost"
    );

    release_thread_pipe();
    assert_eq!(pipe_fds(), base, "released");
    assert_eq!(lender.outstanding(), 0);
    assert!(lender.try_close().is_ok());
}
