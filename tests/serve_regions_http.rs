//! The serve_regions example's HTTP rules, without sockets: which `Range` headers
//! get 206, 200 or 416, what keeps a connection alive, where a pipelined request
//! starts, and which request targets name a servable file.

#[allow(dead_code)] // only the `http` module is used here
#[path = "../examples/serve_regions/main.rs"]
mod serve_regions;

use serve_regions::http::{
    file_name, parse_range, parse_request, BadRequest, Body, RangeAsk, TargetError,
};

#[test]
fn ranges_parse_like_rfc_9110_says() {
    let part = |start, end| RangeAsk::Part { start, end };
    assert_eq!(parse_range(None, 100), RangeAsk::Whole);
    assert_eq!(parse_range(Some("bytes=0-9"), 100), part(0, 10));
    assert_eq!(parse_range(Some("bytes=90-"), 100), part(90, 100));
    assert_eq!(parse_range(Some("bytes=-5"), 100), part(95, 100));
    assert_eq!(parse_range(Some("bytes=-500"), 100), part(0, 100));
    assert_eq!(parse_range(Some("bytes=50-500"), 100), part(50, 100));
    assert_eq!(
        parse_range(Some("bytes=100-"), 100),
        RangeAsk::Unsatisfiable
    );
    assert_eq!(parse_range(Some("bytes=-0"), 100), RangeAsk::Unsatisfiable);
    assert_eq!(parse_range(Some("bytes=9-3"), 100), RangeAsk::Unsatisfiable);
    assert_eq!(parse_range(Some("bytes=x-1"), 100), RangeAsk::Unsatisfiable);
    assert_eq!(
        parse_range(Some("bytes=+1-2"), 100),
        RangeAsk::Unsatisfiable
    );
    assert_eq!(parse_range(Some("bytes=0-0"), 0), RangeAsk::Unsatisfiable);
    // Numbers past u64 are still numbers (RFC 9110 §14.1.2): a last-byte-pos past
    // the end means "to the end", a suffix longer than the file the whole file, and
    // a first-byte-pos past the end is unsatisfiable.
    let huge = "99999999999999999999999";
    assert_eq!(
        parse_range(Some("bytes=0-999999999999999999999"), 100),
        part(0, 100)
    );
    assert_eq!(
        parse_range(Some("bytes=-18446744073709551616"), 100),
        part(0, 100)
    );
    assert_eq!(
        parse_range(Some(&format!("bytes=10-{huge}")), 100),
        part(10, 100)
    );
    assert_eq!(
        parse_range(Some(&format!("bytes={huge}-")), 100),
        RangeAsk::Unsatisfiable
    );
    assert_eq!(
        parse_range(Some(&format!("bytes={huge}-{huge}")), 100),
        RangeAsk::Unsatisfiable
    );
    assert_eq!(parse_range(Some("bytes=-"), 100), RangeAsk::Unsatisfiable);
    // Ignorable: several ranges, or a unit this server does not know.
    assert_eq!(parse_range(Some("bytes=0-1,5-9"), 100), RangeAsk::Whole);
    assert_eq!(parse_range(Some("items=0-1"), 100), RangeAsk::Whole);
}

#[test]
fn request_heads_tell_keep_alive_and_bodies_apart() {
    let parse = |head: &str| parse_request(head.as_bytes()).unwrap().unwrap().0;
    let get = parse("GET /a HTTP/1.1\r\nRange: bytes=1-2\r\n\r\n");
    assert!(get.keep_alive);
    assert_eq!(get.body, Body::None);
    assert_eq!(get.range.as_deref(), Some("bytes=1-2"));
    assert!(!parse("GET /a HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive);
    assert!(!parse("GET /a HTTP/1.0\r\n\r\n").keep_alive);
    assert!(parse("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
    let body = |head: &str| parse(head).body;
    assert_eq!(
        body("GET /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"),
        Body::Length(3)
    );
    assert_eq!(
        body("GET /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n"),
        Body::None
    );
    assert_eq!(
        body("GET /a HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n"),
        Body::Length(4)
    );
    assert_eq!(
        body("GET /a HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
        Body::Length(u64::MAX),
        "a length past u64 is over any bound, not malformed"
    );
    for invalid in ["4, 5", "-1", "+4", "0x10", ""] {
        let head = format!("GET /a HTTP/1.1\r\nContent-Length: {invalid}\r\n\r\n");
        assert_eq!(body(&head), Body::Invalid, "{invalid:?}");
    }
    assert_eq!(
        body("GET /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
        Body::Encoded
    );

    let two = b"GET /a HTTP/1.1\r\n\r\nHEAD /b HTTP/1.1\r\n\r\n";
    let (_, used) = parse_request(two).unwrap().unwrap();
    assert_eq!(
        &two[used..],
        b"HEAD /b HTTP/1.1\r\n\r\n",
        "a pipelined request stays"
    );
    assert_eq!(parse_request(b"GET /a HTTP/1.1\r\nHost: x"), Ok(None));
    assert_eq!(
        parse_request(b"\x01\x02 nonsense\r\n\r\n"),
        Err(BadRequest::Malformed)
    );
    let huge = format!("GET /a HTTP/1.1\r\nX: {}", "y".repeat(17 * 1024));
    assert_eq!(parse_request(huge.as_bytes()), Err(BadRequest::TooLarge));
}

#[test]
fn targets_that_could_walk_a_directory_are_refused() {
    assert_eq!(file_name("/a.txt?x=1"), Ok("a.txt".to_owned()));
    assert_eq!(file_name("/my%20file"), Ok("my file".to_owned()));
    for traversal in [
        "/..",
        "/.",
        "/%2e%2e",
        "/../etc/passwd",
        "//etc/passwd",
        "/a/b",
        "/%2Fetc%2Fpasswd",
        "/a%5cb",
        "/a%00",
    ] {
        assert_eq!(
            file_name(traversal),
            Err(TargetError::Traversal),
            "{traversal}"
        );
    }
    for malformed in ["", "a.txt", "*", "http://host/a.txt", "/", "/%zz", "/%e9"] {
        assert_eq!(
            file_name(malformed),
            Err(TargetError::Malformed),
            "{malformed}"
        );
    }
}
