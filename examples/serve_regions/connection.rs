//! A client connection as it passes between the owner (reading requests) and a
//! worker (sending one response), and back for the next request.

use std::net::TcpStream;
use std::time::Instant;

/// A non-blocking client socket and the bytes read from it but not parsed yet (the
/// start of the next request, when a client pipelines).
pub struct Connection {
    /// The socket, non-blocking, `TCP_NODELAY`.
    pub stream: TcpStream,
    /// Read, not yet consumed by a parsed request.
    pub unread: Vec<u8>,
    /// When it last began waiting for a request (for the idle timeout).
    pub idle_since: Instant,
}

impl Connection {
    /// Prepares an accepted socket: non-blocking (nobody ever waits on one client)
    /// and with Nagle off, so a small head or tail segment is not held back waiting
    /// for the client's delayed ACK.
    pub fn new(stream: TcpStream) -> std::io::Result<Connection> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            unread: Vec::new(),
            idle_since: Instant::now(),
        })
    }
}
