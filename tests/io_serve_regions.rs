//! The serve_regions example, in-process: keep-alive, HEAD, ranges, only the named
//! files, pipelining, no blocking on idle clients, and a graceful stop that waits
//! for a send in flight before closing the file.

mod io_common;
mod serve_common;
mod serve_in_process;

use io_common::{identity, open_count, pattern, TempFile};
use serve_common::Client;
use serve_in_process::serve_regions::args::Config;
use serve_in_process::Server;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn name_of(file: &TempFile) -> String {
    file.path.file_name().unwrap().to_str().unwrap().to_owned()
}

#[test]
fn only_files_named_on_the_command_line_are_served() {
    let served = TempFile::with(b"served");
    let sibling = TempFile::with(b"a file beside it that nobody named");
    let server = Server::start(Config::new(vec![served.path.clone()]));
    let mut client = Client::connect(server.addr);
    let ok = client.request("GET", &format!("/{}?q=1", name_of(&served)), &[]);
    assert_eq!((ok.status, ok.body.as_slice()), (200, &b"served"[..]));
    let dir = served.path.parent().unwrap().to_str().unwrap().to_owned();
    let refused = [
        (format!("/{}", name_of(&sibling)), 404),
        (format!("/../{}", name_of(&sibling)), 403),
        (format!("/%2e%2e/{}", name_of(&served)), 403),
        (format!("/{dir}/{}", name_of(&sibling)), 403),
        (
            format!("/{}", urlencode(&format!("{dir}/{}", name_of(&sibling)))),
            403,
        ),
        ("/etc/passwd".to_owned(), 403),
        (format!("http://test/{}", name_of(&served)), 400),
    ];
    for (target, status) in refused {
        let response = client.request("GET", &target, &[]);
        assert_eq!(response.status, status, "{target}");
        assert!(response.body.is_empty(), "{target} leaked bytes");
    }
    let report = server.stop();
    assert_eq!(report.connections, 1, "refusals keep the connection");
    assert_eq!(report.requests, 8);
}

fn urlencode(text: &str) -> String {
    text.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[test]
fn one_kept_alive_connection_serves_get_head_ranges_and_refusals() {
    let bytes = pattern(100_000);
    let file = TempFile::with(&bytes);
    let path = format!("/{}", name_of(&file));
    let server = Server::start(Config::new(vec![file.path.clone()]));
    let mut client = Client::connect(server.addr);

    let whole = client.request("GET", &path, &[]);
    assert_eq!(whole.status, 200);
    assert!(whole.body == bytes);
    assert_eq!(whole.header("connection"), None, "HTTP/1.1 stays open");

    let head = client.request("HEAD", &path, &[]);
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("100000"));
    assert!(head.body.is_empty());
    let head_range = client.request("HEAD", &path, &["Range: bytes=10-19"]);
    assert_eq!(
        (head_range.status, head_range.header("content-length")),
        (206, Some("10"))
    );

    let part = client.request("GET", &path, &["Range: bytes=1000-1999"]);
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 1000-1999/100000"));
    assert!(part.body == bytes[1000..2000]);

    let multi = client.request("GET", &path, &["Range: bytes=0-9,20-29"]);
    assert_eq!(
        multi.status, 200,
        "several ranges: the whole file, as RFC 9110 allows"
    );
    assert!(multi.body == bytes);
    let unknown_unit = client.request("GET", &path, &["Range: items=0-9"]);
    assert_eq!(unknown_unit.status, 200);
    assert!(unknown_unit.body == bytes);

    let past_end = client.request("GET", &path, &["Range: bytes=100000-"]);
    assert_eq!(past_end.status, 416);
    assert_eq!(past_end.header("content-range"), Some("bytes */100000"));
    let post = client.request("DELETE", &path, &[]);
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(client.request("GET", "/no-such-file", &[]).status, 404);

    // A HEAD answered with body bytes would show up here as a garbled response.
    let last = client.request("GET", &path, &["Range: bytes=-3"]);
    assert!(last.body == bytes[99_997..]);

    let report = server.stop();
    assert_eq!(
        (report.connections, report.requests, report.failed),
        (1, 10, 0)
    );
    let bodies: usize = report.paths.values().sum();
    assert_eq!(
        bodies, 5,
        "200s and 206s of GET; HEAD and refusals send none"
    );
}

#[test]
fn connection_close_and_http_1_0_end_the_connection_after_the_response() {
    let file = TempFile::with(b"0123456789");
    let path = format!("/{}", name_of(&file));
    let server = Server::start(Config::new(vec![file.path.clone()]));

    let mut close = Client::connect(server.addr);
    let response = close.request("GET", &path, &["Connection: close"]);
    assert_eq!(
        (response.status, response.header("connection")),
        (200, Some("close"))
    );
    assert!(close.closed_by_server());

    let mut old = Client::connect(server.addr);
    write!(old.stream, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let response = old.response(false);
    assert_eq!(response.body, b"0123456789");
    assert!(old.closed_by_server());

    // The body is read and dropped, not taken for the next request.
    let mut with_body = Client::connect(server.addr);
    with_body.send("GET", &path, &["Content-Length: 31"]);
    write!(with_body.stream, "GET /not-a-request HTTP/1.1\r\n\r\n").unwrap();
    with_body.send("GET", &path, &["Range: bytes=2-3"]);
    let response = with_body.response(false);
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, &b"0123456789"[..])
    );
    let response = with_body.response(false);
    assert_eq!(
        (response.status, response.body.as_slice()),
        (206, &b"23"[..])
    );
    server.stop();
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let bytes = pattern(50_000);
    let file = TempFile::with(&bytes);
    let path = format!("/{}", name_of(&file));
    let server = Server::start(Config::new(vec![file.path.clone()]));
    let mut client = Client::connect(server.addr);
    let mut burst = String::new();
    for i in 0..10 {
        burst.push_str(&format!(
            "GET {path} HTTP/1.1\r\nRange: bytes={}-{}\r\n\r\n",
            i * 1000,
            i * 1000 + 99
        ));
    }
    client.stream.write_all(burst.as_bytes()).unwrap();
    for i in 0..10 {
        let response = client.response(false);
        assert_eq!(response.status, 206);
        assert!(
            response.body == bytes[i * 1000..i * 1000 + 100],
            "response {i}"
        );
    }
    assert_eq!(server.stop().requests, 10);
}

#[test]
fn an_idle_connection_delays_no_other_request() {
    let bytes = pattern(10_000);
    let file = TempFile::with(&bytes);
    let path = format!("/{}", name_of(&file));
    let server = Server::start(Config::new(vec![file.path.clone()]));
    // Half a request head, then silence: the old server waited 5 s on this.
    let mut idle = Client::connect(server.addr);
    idle.stream
        .write_all(b"GET / HTTP/1.1\r\nHost: te")
        .unwrap();
    std::thread::sleep(Duration::from_millis(50));

    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let mut client = Client::connect(server.addr);
        let response = client.request("GET", &path, &[&format!("Range: bytes={i}-{}", i + 99)]);
        slowest = slowest.max(started.elapsed());
        assert!(response.body == bytes[i..i + 100]);
    }
    println!("slowest request beside an idle connection: {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request took {slowest:?}"
    );
    let report = server.stop();
    assert_eq!((report.connections, report.requests), (21, 20));
}

#[test]
fn a_client_that_stops_reading_holds_up_only_its_own_response() {
    let bytes = pattern(64 << 20);
    let file = TempFile::with(&bytes);
    let path = format!("/{}", name_of(&file));
    let mut config = Config::new(vec![file.path.clone()]);
    config.workers = 1; // the stuck send and every other share one worker
    let server = Server::start(config);
    let mut stuck = Client::connect(server.addr);
    stuck.send("GET", &path, &[]);
    // Long enough for the socket buffers to fill and the send to block.
    std::thread::sleep(Duration::from_millis(100));

    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        let mut client = Client::connect(server.addr);
        let range = format!("Range: bytes={i}-{}", i + 999);
        let response = client.request("GET", &path, &[&range]);
        slowest = slowest.max(started.elapsed());
        assert!(response.body == bytes[i..i + 1000]);
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest request took {slowest:?}"
    );
    // Hanging up ends the stuck send (and returns its loan).
    drop(stuck);
    let report = server.stop();
    assert_eq!((report.requests, report.failed), (21, 1));
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let file = TempFile::with(b"x");
    let mut config = Config::new(vec![file.path.clone()]);
    config.idle_timeout = Duration::from_millis(300);
    let server = Server::start(config);
    let started = Instant::now();
    let mut idle = Client::connect(server.addr);
    assert!(idle.closed_by_server());
    assert!(started.elapsed() >= Duration::from_millis(300));
    server.stop();
}

#[test]
fn concurrent_clients_get_exactly_their_bytes_and_the_limit_stops_the_server() {
    let small = pattern(200 * 1024);
    let big: Vec<u8> = pattern((1 << 20) + 7)
        .into_iter()
        .map(|b| b ^ 0x5a)
        .collect();
    let files = [TempFile::with(&small), TempFile::with(&big)];
    let names: Vec<String> = files.iter().map(name_of).collect();
    let contents = Arc::new([small, big]);
    let ids: Vec<_> = files.iter().map(|f| identity(&f.open())).collect();

    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 12;
    let mut config = Config::new(files.iter().map(|f| f.path.clone()).collect());
    config.requests = Some(CLIENTS * PER_CLIENT);
    let server = Server::start(config);
    let addr = server.addr;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (names, contents) = (names.clone(), Arc::clone(&contents));
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                for i in 0..PER_CLIENT {
                    let which = (c + i) % 2;
                    let (name, bytes) = (&names[which], &contents[which]);
                    let size = bytes.len();
                    let path = format!("/{name}");
                    match i % 6 {
                        0 => {
                            let response = client.request("GET", &path, &[]);
                            assert_eq!(response.status, 200);
                            assert!(response.body == *bytes, "full body of {name}");
                        }
                        1 => {
                            let range = format!("Range: bytes={size}-");
                            assert_eq!(client.request("GET", &path, &[&range]).status, 416);
                        }
                        2 => assert_eq!(client.request("HEAD", "/no-such-file", &[]).status, 404),
                        _ => {
                            let start = (c * 7919 + i * 104_729) % (size - 1);
                            let end = (start + 1 + (c * 31 + i) * 4099).min(size - 1);
                            let range = format!("Range: bytes={start}-{end}");
                            let response = client.request("GET", &path, &[&range]);
                            assert_eq!(response.status, 206);
                            assert_eq!(
                                response.header("content-range"),
                                Some(format!("bytes {start}-{end}/{size}").as_str())
                            );
                            assert!(
                                response.body == bytes[start..=end],
                                "{name} bytes {start}-{end}"
                            );
                        }
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    // The limit stops it: no stop signal here.
    let report = server.join();
    assert_eq!(report.requests, CLIENTS * PER_CLIENT);
    assert_eq!(
        report.connections, CLIENTS,
        "every client kept one connection"
    );
    assert_eq!(report.failed, 0);
    let bodies: usize = report.paths.values().sum();
    assert_eq!(
        bodies,
        CLIENTS * PER_CLIENT * 4 / 6,
        "200s and 206s; 416 and 404 have no body"
    );
    for id in ids {
        assert_eq!(
            open_count(id),
            0,
            "each served file is closed once the server returns"
        );
    }
    println!("{report:?}");
}

#[test]
fn stop_waits_for_the_send_in_flight_then_closes_the_file() {
    // Far more than loopback socket buffers hold, so the send is still running
    // when the stop comes.
    let bytes = pattern(64 << 20);
    let file = TempFile::with(&bytes);
    let id = identity(&file.open());
    let mut server = Server::start(Config::new(vec![file.path.clone()]));
    let mut client = Client::connect(server.addr);
    client.send("GET", &format!("/{}", name_of(&file)), &[]);
    let mut first = vec![0; 64 * 1024];
    client.stream.read_exact(&mut first).unwrap();

    server.signal_stop();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !server.thread.is_finished(),
        "the server stopped before its send ended"
    );
    assert_eq!(
        open_count(id),
        1,
        "the file stays open while its region is lent"
    );

    let mut rest = Vec::new();
    client.stream.read_to_end(&mut rest).unwrap();
    // `first` began with the head; glue the two back together.
    let mut all = first;
    all.extend_from_slice(&rest);
    let head_end = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert!(
        all[head_end..] == bytes[..],
        "the whole body arrived after the stop"
    );

    let report = server.join();
    assert_eq!((report.requests, report.failed), (1, 0));
    assert_eq!(open_count(id), 0, "closed once the send returned its loan");
}
