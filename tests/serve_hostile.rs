//! The serve_regions binary against the clients issue 16 found it failing: an idle
//! flood at the connection cap, requests pipelined before a half-close, a request
//! carrying a body, and ranges past u64. Each on loopback, bounded in count and
//! time, every byte of every answered body checked against the file.

mod io_common;
mod serve_common;

use io_common::{pattern, TempFile};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use nix::sys::signal::Signal;
use serve_common::child::Server;
use serve_common::Client;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

fn name_of(file: &TempFile) -> String {
    let name = file.path.file_name().unwrap().to_str().unwrap();
    format!("/{name}")
}

/// Whether the server has closed `stream`, without blocking: `Some(true)` on EOF,
/// `Some(false)` while it is open and silent. Anything else (data, a reset) fails.
fn closed(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0];
    let result = (&*stream).read(&mut byte);
    stream.set_nonblocking(false).unwrap();
    match result {
        Ok(0) => true,
        Err(error) if error.kind() == ErrorKind::WouldBlock => false,
        other => panic!("an idle connection got {other:?}"),
    }
}

/// Reads until EOF; a reset (which would have destroyed unread response bytes)
/// fails the test.
fn assert_clean_eof(client: &mut Client, what: &str) {
    let mut rest = Vec::new();
    match client.stream.read_to_end(&mut rest) {
        Ok(_) => assert!(
            rest.is_empty(),
            "{what}: {} bytes after the response",
            rest.len()
        ),
        Err(error) => panic!("{what}: the connection ended with {error}, not EOF"),
    }
}

const IDLE: usize = 2_000;
const CAP: usize = 1024; // the server's default --max-connections

#[test]
fn at_the_cap_a_new_client_evicts_the_longest_idle_connection() {
    // 2,000 client sockets here, up to 1,024 in the server (which inherits this).
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(
        hard >= IDLE as u64 + 256,
        "needs a hard RLIMIT_NOFILE above {IDLE}"
    );
    let bytes = pattern(1 << 20);
    let file = TempFile::with(&bytes);
    let server = Server::start(&[file.path.to_str().unwrap()]);

    // Connected in order, never a byte sent: each idles from the moment it is
    // accepted, so the oldest is the first.
    let connecting = Instant::now();
    let idle: Vec<TcpStream> = (0..IDLE)
        .map(|_| TcpStream::connect(server.addr).expect("connect an idle client"))
        .collect();
    println!(
        "{IDLE} idle clients connected in {:?}",
        connecting.elapsed()
    );
    // The server holds the newest CAP and has closed every older one.
    let deadline = Instant::now() + Duration::from_secs(30);
    let evicted = loop {
        let evicted: Vec<usize> = (0..IDLE).filter(|&i| closed(&idle[i])).collect();
        if evicted.len() >= IDLE - CAP || Instant::now() > deadline {
            break evicted;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("evictions seen after {:?}", connecting.elapsed());
    assert!(
        evicted.iter().copied().eq(0..IDLE - CAP),
        "expected the oldest {} idle connections closed, the newest {CAP} kept; closed: {} \
         (first {:?}, last {:?})",
        IDLE - CAP,
        evicted.len(),
        evicted.first(),
        evicted.last()
    );

    // A fresh client at the cap: timed from connect to the body's last byte.
    let (start, end) = (12_345, 12_345 + 64 * 1024);
    let began = Instant::now();
    let mut fresh = Client::connect(server.addr);
    let range = format!("Range: bytes={start}-{}", end - 1);
    let response = fresh.request("GET", &name_of(&file), &[&range]);
    let took = began.elapsed();
    assert_eq!(response.status, 206);
    assert!(
        response.body == bytes[start..end],
        "the fresh client's bytes"
    );
    println!("with {IDLE} idle connections open (cap {CAP}), a fresh client's 64 KiB range took {took:?}");
    // The issue asks for under 100 ms; the bound is generous for a loaded 2-core CI
    // machine, the figure above is the measurement.
    assert!(
        took < Duration::from_secs(1),
        "the fresh client waited {took:?}"
    );

    // Its slot came from the longest-idle connection still open; the rest stay.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !closed(&idle[IDLE - CAP]) {
        assert!(
            Instant::now() < deadline,
            "the longest-idle connection stayed open"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        (IDLE - CAP + 1..IDLE).all(|i| !closed(&idle[i])),
        "only the longest-idle connection was evicted for it"
    );
    let (status, report) = server.stop_with(Signal::SIGTERM);
    println!("{report}");
    assert!(status.success(), "exit status {status}");
    assert!(
        report.contains(&format!("evicted idle: {}", IDLE - CAP + 1)),
        "{report}"
    );
}

#[test]
fn requests_pipelined_before_a_half_close_are_all_answered() {
    let bytes = pattern(300 * 1024);
    let file = TempFile::with(&bytes);
    let path = name_of(&file);
    let server = Server::start(&[file.path.to_str().unwrap()]);
    let mut client = Client::connect(server.addr);
    let asks = [(0, bytes.len()), (100, 200), (250_000, 300 * 1024)];
    let mut burst = String::new();
    for (i, (start, end)) in asks.iter().enumerate() {
        let range = if i == 0 {
            String::new()
        } else {
            format!("Range: bytes={start}-{}\r\n", end - 1)
        };
        burst.push_str(&format!("GET {path} HTTP/1.1\r\nHost: test\r\n{range}\r\n"));
    }
    client.stream.write_all(burst.as_bytes()).unwrap();
    client.stream.shutdown(Shutdown::Write).unwrap();
    for (i, &(start, end)) in asks.iter().enumerate() {
        let response = client.response(false);
        assert_eq!(
            response.status,
            if i == 0 { 200 } else { 206 },
            "answer {i}"
        );
        assert!(
            response.body == bytes[start..end],
            "answer {i}: bytes {start}..{end}"
        );
        // Only the last may say `Connection: close` (whether it does depends on
        // whether the server had seen the half-close when it answered).
        let closing = response.header("connection") == Some("close");
        assert!(!closing || i == asks.len() - 1, "answer {i} closed early");
    }
    assert_clean_eof(&mut client, "after the last answer");
    let (status, report) = server.stop_with(Signal::SIGTERM);
    assert!(status.success(), "exit status {status}");
    assert!(report.contains("1 connections, 3 requests"), "{report}");
}

/// Writes `head` and `body_len` bytes of body from another thread (as a client
/// that sends its whole request before reading would), returning how that went.
fn send_in_background(
    client: &Client,
    head: String,
    body_len: usize,
    then: &'static [u8],
) -> std::thread::JoinHandle<std::io::Result<()>> {
    let mut writer = client.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        writer.write_all(head.as_bytes())?;
        let chunk = vec![b'x'; 64 * 1024];
        let mut left = body_len;
        while left > 0 {
            let n = left.min(chunk.len());
            writer.write_all(&chunk[..n])?;
            left -= n;
        }
        writer.write_all(then)
    })
}

#[test]
fn a_request_body_is_read_so_no_reset_cuts_the_response() {
    const BODY: usize = 4 << 20;
    let bytes = pattern(10_000_000);
    let file = TempFile::with(&bytes);
    let path = name_of(&file);

    // Over the bound (default 1 MiB): 413, then EOF after the body was drained.
    let server = Server::start(&[file.path.to_str().unwrap()]);
    let mut client = Client::connect(server.addr);
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {BODY}\r\n\r\n");
    let writer = send_in_background(&client, head, BODY, b"");
    let response = client.response(false);
    assert_eq!(
        (response.status, response.header("connection")),
        (413, Some("close"))
    );
    writer
        .join()
        .unwrap()
        .expect("the server drained the body it refused");
    assert_clean_eof(&mut client, "after the 413");

    // A chunked body: 411, and the same lingering close.
    let mut client = Client::connect(server.addr);
    let head = format!("POST {path} HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n");
    let writer = send_in_background(&client, head, 0, b"5\r\nhello\r\n0\r\n\r\n");
    let response = client.response(false);
    assert_eq!(
        (response.status, response.header("connection")),
        (411, Some("close"))
    );
    writer.join().unwrap().unwrap();
    assert_clean_eof(&mut client, "after the 411");
    let (status, report) = server.stop_with(Signal::SIGTERM);
    assert!(status.success(), "exit status {status}");
    assert!(report.contains("2 connections, 2 requests"), "{report}");

    // Under the bound: read and discarded, the connection kept for the next request.
    let server = Server::start(&["--max-body", "8388608", file.path.to_str().unwrap()]);
    let mut client = Client::connect(server.addr);
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {BODY}\r\n\r\n");
    let next: &'static [u8] = b"GET /x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let writer = send_in_background(&client, head, BODY, next);
    let response = client.response(false);
    assert_eq!(response.status, 200);
    assert!(response.body == bytes, "the whole 10 MB body, uncut");
    assert_eq!(
        client.response(false).status,
        404,
        "the request after the body"
    );
    writer
        .join()
        .unwrap()
        .expect("the server read the whole body");
    assert_clean_eof(&mut client, "after Connection: close");
    let (status, report) = server.stop_with(Signal::SIGTERM);
    assert!(status.success(), "exit status {status}");
    assert!(report.contains("1 connections, 2 requests"), "{report}");
}

#[test]
fn ranges_past_u64_are_clamped_to_the_file() {
    let bytes = pattern(10_000);
    let file = TempFile::with(&bytes);
    let path = name_of(&file);
    let server = Server::start(&[file.path.to_str().unwrap()]);
    let mut client = Client::connect(server.addr);
    for (range, start) in [
        ("bytes=0-999999999999999999999", 0),
        ("bytes=-18446744073709551616", 0),
        ("bytes=9990-18446744073709551616", 9990),
    ] {
        let response = client.request("GET", &path, &[&format!("Range: {range}")]);
        assert_eq!(response.status, 206, "{range}");
        let content_range = format!("bytes {start}-9999/10000");
        assert_eq!(
            response.header("content-range"),
            Some(content_range.as_str())
        );
        assert!(
            response.body == bytes[start..],
            "{range}: the file from {start}"
        );
    }
    for range in [
        "bytes=18446744073709551616-",
        "bytes=10000-",
        "bytes=99999999999999999999-0",
    ] {
        let response = client.request("GET", &path, &[&format!("Range: {range}")]);
        assert_eq!(response.status, 416, "{range}");
        assert_eq!(response.header("content-range"), Some("bytes */10000"));
    }
    let (status, _) = server.stop_with(Signal::SIGTERM);
    assert!(status.success(), "exit status {status}");
}
