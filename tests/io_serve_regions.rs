//! The serve_regions example, in-process: many concurrent range requests from plain
//! TcpStream clients, bodies checked by content, and the files closed at the end.

mod io_common;
#[allow(dead_code)] // the example's `main` is not used here
#[path = "../examples/serve_regions.rs"]
mod serve_regions;

use io_common::{pattern, TempFile};
use serve_regions::{parse_range, serve, Config};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{mpsc, Arc};

/// Status line, headers (lower-cased names) and body of one request.
fn get(addr: SocketAddr, path: &str, range: Option<&str>) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n{range}\r\n").unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(at) = response.parse(&raw).unwrap() else {
        panic!("partial response")
    };
    let headers = response
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    (response.code.unwrap(), headers, raw[at..].to_vec())
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn ranges_parse_like_rfc_9110_says() {
    assert_eq!(parse_range(None, 100), Ok(None));
    assert_eq!(parse_range(Some("bytes=0-9"), 100), Ok(Some((0, 10))));
    assert_eq!(parse_range(Some("bytes=90-"), 100), Ok(Some((90, 100))));
    assert_eq!(parse_range(Some("bytes=-5"), 100), Ok(Some((95, 100))));
    assert_eq!(parse_range(Some("bytes=50-500"), 100), Ok(Some((50, 100))));
    assert_eq!(parse_range(Some("bytes=100-"), 100), Err(()));
    assert_eq!(parse_range(Some("bytes=9-3"), 100), Err(()));
    assert_eq!(parse_range(Some("items=0-1"), 100), Err(()));
    assert_eq!(parse_range(Some("bytes=x-1"), 100), Err(()));
}

#[test]
fn concurrent_range_requests_get_exactly_their_bytes() {
    let small = pattern(200 * 1024);
    let big: Vec<u8> = pattern((1 << 20) + 7)
        .into_iter()
        .map(|b| b ^ 0x5a)
        .collect();
    let files = [TempFile::with(&small), TempFile::with(&big)];
    let names: Vec<String> = files
        .iter()
        .map(|f| f.path.file_name().unwrap().to_str().unwrap().to_owned())
        .collect();
    let contents = Arc::new([small, big]);

    const CLIENTS: usize = 8;
    const PER_CLIENT: usize = 12;
    let (ready, addr) = mpsc::channel();
    let config = Config {
        port: 0,
        files: files.iter().map(|f| f.path.clone()).collect(),
        requests: Some(CLIENTS * PER_CLIENT),
        workers: 4,
    };
    let server = std::thread::spawn(move || serve(config, move |a| ready.send(a).unwrap()));
    let addr: SocketAddr = addr.recv().unwrap();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (names, contents) = (names.clone(), Arc::clone(&contents));
            std::thread::spawn(move || {
                for i in 0..PER_CLIENT {
                    let which = (c + i) % 2;
                    let (name, bytes) = (&names[which], &contents[which]);
                    let size = bytes.len();
                    let path = format!("/{name}");
                    match i % 6 {
                        0 => {
                            let (status, _, body) = get(addr, &path, None);
                            assert_eq!(status, 200);
                            assert!(body == *bytes, "full body of {name}");
                        }
                        1 => {
                            let (status, _, _) = get(addr, &path, Some(&format!("bytes={size}-")));
                            assert_eq!(status, 416);
                        }
                        2 => {
                            let (status, _, _) = get(addr, "/no-such-file", None);
                            assert_eq!(status, 404);
                        }
                        _ => {
                            let start = (c * 7919 + i * 104_729) % (size - 1);
                            let end = (start + 1 + (c * 31 + i) * 4099).min(size - 1);
                            let (status, headers, body) =
                                get(addr, &path, Some(&format!("bytes={start}-{end}")));
                            assert_eq!(status, 206);
                            assert_eq!(
                                header(&headers, "content-range"),
                                Some(format!("bytes {start}-{end}/{size}").as_str())
                            );
                            assert!(body == bytes[start..=end], "{name} bytes {start}-{end}");
                        }
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let report = server.join().unwrap().unwrap();
    assert_eq!(report.requests, CLIENTS * PER_CLIENT);
    assert_eq!(report.failed, 0);
    let bodies: usize = report.paths.values().sum();
    assert_eq!(
        bodies,
        CLIENTS * PER_CLIENT * 4 / 6,
        "200s and 206s; 416 and 404 have no body"
    );
    println!("{report:?}");
}
