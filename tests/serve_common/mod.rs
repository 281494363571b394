//! A minimal HTTP/1.1 client for the serve_regions tests: one keep-alive connection,
//! responses read by their `Content-Length`, so a test sees exactly where each
//! response ends and whether the server closed the connection.
#![allow(dead_code)] // each test crate uses its own subset

pub mod child;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Lower-cased names.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A connection to the server, kept open across requests.
pub struct Client {
    pub stream: TcpStream,
    /// Read past the end of the last response (the server never sends ahead, so
    /// this stays empty unless it misbehaves).
    pending: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the server");
        // A hung server fails the test instead of hanging it.
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            pending: Vec::new(),
        }
    }

    /// Sends `method path` with `headers` (each "Name: value") and reads the response.
    pub fn request(&mut self, method: &str, path: &str, headers: &[&str]) -> Response {
        self.send(method, path, headers);
        self.response(method == "HEAD")
    }

    pub fn send(&mut self, method: &str, path: &str, headers: &[&str]) {
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for header in headers {
            head.push_str(header);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        self.stream
            .write_all(head.as_bytes())
            .expect("send request");
    }

    /// Reads one response; a HEAD response has no body whatever its length says.
    pub fn response(&mut self, to_head: bool) -> Response {
        let mut buf = std::mem::take(&mut self.pending);
        let (status, headers, at) = loop {
            let mut slots = [httparse::EMPTY_HEADER; 32];
            let mut parsed = httparse::Response::new(&mut slots);
            if let httparse::Status::Complete(at) = parsed.parse(&buf).expect("a valid response") {
                let headers: Vec<(String, String)> = parsed
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                break (parsed.code.unwrap(), headers, at);
            }
            let n = self.fill(&mut buf).expect("read response head");
            assert!(n > 0, "the server closed before a complete response head");
        };
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().expect("numeric Content-Length"))
            .expect("every response has a Content-Length");
        let length = if to_head { 0 } else { length };
        while buf.len() < at + length {
            let n = self.fill(&mut buf).expect("read response body");
            assert!(
                n > 0,
                "the server closed {} bytes into a {length}-byte body",
                buf.len() - at
            );
        }
        self.pending = buf.split_off(at + length);
        Response {
            status,
            headers,
            body: buf.split_off(at),
        }
    }

    /// True if the server closed the connection (EOF with nothing more sent).
    pub fn closed_by_server(&mut self) -> bool {
        let mut buf = std::mem::take(&mut self.pending);
        let end = self.fill(&mut buf);
        buf.is_empty()
            && match end {
                Ok(n) => n == 0,
                Err(error) => error.kind() == io::ErrorKind::ConnectionReset,
            }
    }

    fn fill(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut chunk = [0; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }
}
