//! A client connection as it passes between the owner (reading requests) and a
//! worker (sending one response), and back for the next request.

use super::http::{Request, MAX_HEAD};
use std::io::{self, ErrorKind, Read};
use std::net::TcpStream;
use std::time::Instant;

/// At most this much is read from one connection per turn of the owner's loop, so
/// a client streaming a large body cannot hold the owner up.
const READ_BUDGET: usize = 256 * 1024;

/// A non-blocking client socket and the bytes read from it but not parsed yet (the
/// start of the next request, when a client pipelines).
pub struct Connection {
    /// The socket, non-blocking, `TCP_NODELAY`.
    pub stream: TcpStream,
    /// Read, not yet consumed by a parsed request.
    pub unread: Vec<u8>,
    /// When it last began waiting for a request (for the idle timeout and eviction).
    pub idle_since: Instant,
    /// The client shut down its sending side: what it sent is still answered, then
    /// the connection closes.
    pub client_closed: bool,
    /// A request whose head is parsed and whose body is still being read; it is
    /// answered once `body_left` reaches 0.
    pub pending: Option<Request>,
    /// Body bytes of `pending` still to read and discard.
    pub body_left: u64,
}

impl Connection {
    /// Prepares an accepted socket: non-blocking (nobody ever waits on one client)
    /// and with Nagle off, so a small head or tail segment is not held back waiting
    /// for the client's delayed ACK.
    pub fn new(stream: TcpStream) -> io::Result<Connection> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            unread: Vec::new(),
            idle_since: Instant::now(),
            client_closed: false,
            pending: None,
            body_left: 0,
        })
    }

    /// Idle: waiting for (the rest of) a request head, no request in progress. Only
    /// idle connections are evicted to admit a new client.
    pub fn is_idle(&self) -> bool {
        self.pending.is_none()
    }

    /// Reads what the socket holds now (up to a head's worth of unparsed bytes, and
    /// a bounded amount per call), discarding body bytes as they come. An error
    /// means the connection is broken.
    pub fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0; 64 * 1024];
        let mut read = 0;
        while self.unread.len() <= MAX_HEAD && read < READ_BUDGET {
            match (&self.stream).read(&mut chunk) {
                Ok(0) => {
                    self.client_closed = true;
                    break;
                }
                Ok(n) => {
                    read += n;
                    self.unread.extend_from_slice(&chunk[..n]);
                    self.discard_body();
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Drops the body bytes of `pending` that have been read.
    pub fn discard_body(&mut self) {
        let take = usize::try_from(self.body_left)
            .unwrap_or(usize::MAX)
            .min(self.unread.len());
        self.unread.drain(..take);
        self.body_left -= take as u64;
    }
}
