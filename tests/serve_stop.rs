//! The serve_regions binary's stop, timed: the drain timeout cuts a send that a
//! slow but steady reader would otherwise stretch out, a second signal stops it at
//! once, the log names the signals that came, and the file stays open while lent
//! and closes cleanly (exit status 0: `close_wait` succeeded) once the cut send's
//! loan is back (in-process too, where this process's fd table shows the close).
//! Every byte the client received is checked against the file.

mod io_common;
mod serve_common;
mod serve_in_process;

use io_common::{identity, open_count, pattern, TempFile};
use nix::sys::signal::Signal;
use serve_common::child::{fds_naming, Server};
use serve_in_process::serve_regions::args::Config;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const FILE: usize = 64 << 20;

/// Asks for the whole file, then reads `chunk` bytes every `pause` (all it can at
/// once if `pause` is zero) until the server ends the connection; returns what
/// arrived.
fn reader(
    stream: TcpStream,
    chunk: usize,
    pause: Duration,
    start: Duration,
) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        std::thread::sleep(start);
        let mut stream = stream;
        let mut got = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                // A cut send may end in a reset; what arrived before it still counts.
                Err(error) if error.kind() == ErrorKind::ConnectionReset => return got,
                Err(error) => panic!("reading the response: {error}"),
            }
            std::thread::sleep(pause);
        }
    })
}

/// Checks that `got` is a 200 head for the file followed by a strict prefix of its
/// bytes (the send was cut); returns how many body bytes arrived.
fn assert_cut_prefix(got: &[u8], bytes: &[u8]) -> usize {
    let head_end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    assert!(got.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let body = &got[head_end..];
    assert!(body.len() < bytes.len(), "the send was cut, not finished");
    assert!(
        body == &bytes[..body.len()],
        "every byte received is the file's"
    );
    body.len()
}

fn start_send(server: &Server, file: &TempFile) -> TcpStream {
    start_send_to(server.addr, file)
}

fn start_send_to(addr: std::net::SocketAddr, file: &TempFile) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let name = file.path.file_name().unwrap().to_str().unwrap();
    write!(stream, "GET /{name} HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    stream
}

#[test]
fn the_drain_timeout_cuts_a_slow_steady_reader() {
    let bytes = pattern(FILE);
    let file = TempFile::with(&bytes);
    let id = identity(&file.open());
    let mut server = Server::start(&["--drain-timeout", "1", file.path.to_str().unwrap()]);
    // 16 KiB per 10 ms: always progressing (the 30 s stall rule never fires), yet
    // 64 MiB would take over 40 s.
    let client = reader(
        start_send(&server, &file),
        16 * 1024,
        Duration::from_millis(10),
        Duration::ZERO,
    );
    std::thread::sleep(Duration::from_millis(300));

    let signalled = Instant::now();
    server.signal(Signal::SIGINT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server.running(),
        "it stopped with a send in flight before the drain timeout"
    );
    assert_eq!(
        fds_naming(server.pid(), id),
        1,
        "the file stays open while lent"
    );
    let exit = server.wait_exit(signalled);
    println!(
        "SIGINT with a slow steady reader and --drain-timeout 1: exited after {:?}",
        exit.took
    );
    println!("{}", exit.stdout);
    assert!(
        exit.status.success(),
        "exit status {}: the file did not close cleanly",
        exit.status
    );
    assert!(
        exit.took >= Duration::from_millis(900),
        "it cut the send before the drain timeout ({:?})",
        exit.took
    );
    assert!(
        exit.took < Duration::from_secs(5),
        "a 1 s drain took {:?}",
        exit.took
    );
    assert!(
        exit.stdout
            .contains("stopped by SIGINT: 1 connections, 1 requests"),
        "{}",
        exit.stdout
    );
    assert!(
        exit.stdout.contains("cut by the stop: 1"),
        "{}",
        exit.stdout
    );
    assert!(
        !exit.stdout.contains("then "),
        "one signal: {}",
        exit.stdout
    );
    assert!(exit.stderr.contains("SIGINT: stopping"), "{}", exit.stderr);
    assert!(!exit.stderr.contains("SIGTERM"), "{}", exit.stderr);

    let received = assert_cut_prefix(&client.join().unwrap(), &bytes);
    println!("the slow reader got {received} of {FILE} bytes, all correct");
}

#[test]
fn a_second_signal_stops_at_once_and_each_is_named() {
    let bytes = pattern(FILE);
    let file = TempFile::with(&bytes);
    let id = identity(&file.open());
    // The default drain timeout (10 s), and a client that reads nothing for now.
    let mut server = Server::start(&[file.path.to_str().unwrap()]);
    let stream = start_send(&server, &file);
    let client = reader(stream, 1 << 20, Duration::ZERO, Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));

    server.signal(Signal::SIGTERM);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        server.running(),
        "the first signal drains, it does not stop at once"
    );
    assert_eq!(
        fds_naming(server.pid(), id),
        1,
        "the file stays open while lent"
    );

    let second = Instant::now();
    server.signal(Signal::SIGINT);
    let exit = server.wait_exit(second);
    println!("second signal to exit: {:?}", exit.took);
    println!("{}", exit.stdout);
    assert!(
        exit.status.success(),
        "exit status {}: the file did not close cleanly",
        exit.status
    );
    assert!(
        exit.took < Duration::from_secs(2),
        "the second signal took {:?} to stop it",
        exit.took
    );
    assert!(
        exit.stdout
            .contains("stopped by SIGTERM: 1 connections, 1 requests"),
        "{}",
        exit.stdout
    );
    assert!(
        exit.stdout.contains("then SIGINT: stopped at once"),
        "{}",
        exit.stdout
    );
    assert!(
        exit.stdout.contains("cut by the stop: 1"),
        "{}",
        exit.stdout
    );
    assert!(
        exit.stderr.contains("SIGTERM: stopping;"),
        "{}",
        exit.stderr
    );
    assert!(
        exit.stderr.contains("SIGINT: stopping at once"),
        "{}",
        exit.stderr
    );

    let received = assert_cut_prefix(&client.join().unwrap(), &bytes);
    println!("the stalled reader got {received} of {FILE} bytes, all correct");
}

#[test]
fn a_cut_send_returns_its_loan_and_the_file_closes_once_after_it() {
    // In-process, so this process's own fd table shows the file open, then closed.
    let bytes = pattern(FILE);
    let file = TempFile::with(&bytes);
    let id = identity(&file.open());
    let mut config = Config::new(vec![file.path.clone()]);
    config.drain_timeout = Duration::from_millis(300);
    let mut server = serve_in_process::Server::start(config);
    let stream = start_send_to(server.addr, &file);
    let client = reader(stream, 1 << 20, Duration::ZERO, Duration::from_secs(2));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(open_count(id), 1, "the server's one fd, lent to the send");

    let stopped = Instant::now();
    server.signal_stop();
    let report = server.join();
    let took = stopped.elapsed();
    println!("in-process stop with a 300 ms drain timeout: {took:?}");
    assert!(
        took >= Duration::from_millis(250),
        "cut before the drain timeout"
    );
    assert!(
        took < Duration::from_secs(5),
        "a 300 ms drain took {took:?}"
    );
    assert_eq!((report.requests, report.cut, report.failed), (1, 1, 0));
    // `serve` returned Ok: the one close succeeded, after the cut send's loan was back.
    assert_eq!(
        open_count(id),
        0,
        "closed once the cut send's loan was back"
    );
    assert_cut_prefix(&client.join().unwrap(), &bytes);
}
