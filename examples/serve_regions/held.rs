//! The connections the owner holds between responses: those waiting for (the rest
//! of) a request, and those lingering after their last response. It decides which
//! one to evict when the server is full and which have waited too long.

use super::connection::Connection;
use nix::poll::{PollFd, PollFlags};
use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// How long a closing connection keeps draining what the client still sends.
/// Closing a socket with unread input makes the kernel send a reset, which can
/// destroy the end of a response the client has not read yet (RFC 9112 §9.6).
pub const LINGER: Duration = Duration::from_secs(2);

/// At most this much is drained from a lingering connection per turn.
const LINGER_BUDGET: usize = 256 * 1024;

struct Lingering {
    connection: Connection,
    until: Instant,
}

/// The connections no worker holds.
#[derive(Default)]
pub struct Held {
    waiting: Vec<Connection>,
    lingering: Vec<Lingering>,
}

impl Held {
    /// How many connections (each an fd) are held.
    pub fn len(&self) -> usize {
        self.waiting.len() + self.lingering.len()
    }

    /// Nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Holds `connection` until it sends (more of) a request.
    pub fn wait(&mut self, connection: Connection) {
        self.waiting.push(connection);
    }

    /// Closes `connection` gracefully: its sending side shuts down now (the client
    /// sees the end of the response, then EOF), and what the client still sends is
    /// read and dropped until it closes too or [`LINGER`] passes.
    pub fn linger(&mut self, connection: Connection) {
        if connection.stream.shutdown(Shutdown::Write).is_ok() {
            self.lingering.push(Lingering {
                connection,
                until: Instant::now() + LINGER,
            });
        }
    }

    /// What to poll, in the order [`Held::ready`] takes the results: every waiting
    /// connection, then every lingering one, each for input.
    pub fn poll_fds(&self) -> Vec<PollFd<'_>> {
        let waiting = self.waiting.iter().map(|c| &c.stream);
        let lingering = self.lingering.iter().map(|l| &l.connection.stream);
        waiting
            .chain(lingering)
            .map(|stream| PollFd::new(stream.as_fd(), PollFlags::POLLIN))
            .collect()
    }

    /// Given which of [`Held::poll_fds`] polled ready: drains the lingering ones
    /// (closing those the client has closed), and hands back the waiting ones with
    /// input, no longer held.
    pub fn ready(&mut self, ready: &[bool]) -> Vec<Connection> {
        let (waiting, lingering) = ready.split_at(self.waiting.len());
        // From the highest index, so `swap_remove` moves only handled entries.
        for index in (0..self.lingering.len()).rev() {
            if lingering[index] && !drain(&self.lingering[index].connection) {
                self.lingering.swap_remove(index);
            }
        }
        let mut readable = Vec::new();
        for index in (0..self.waiting.len()).rev() {
            if waiting[index] {
                readable.push(self.waiting.swap_remove(index));
            }
        }
        readable
    }

    /// Whether [`Held::evict`] would find a connection to close.
    pub fn can_evict(&self) -> bool {
        !self.lingering.is_empty() || self.waiting.iter().any(Connection::is_idle)
    }

    /// Closes one connection to make room for a new client: a lingering one (its
    /// response is out), else the idle one that has waited longest for a request.
    /// False if every held connection has a request in progress.
    pub fn evict(&mut self) -> bool {
        if let Some(index) = oldest(self.lingering.iter().map(|l| (true, l.until))) {
            self.lingering.swap_remove(index);
            return true;
        }
        let idle = self.waiting.iter().map(|c| (c.is_idle(), c.idle_since));
        match oldest(idle) {
            Some(index) => {
                self.waiting.swap_remove(index);
                true
            }
            None => false,
        }
    }

    /// Closes the waiting connections idle for `idle_timeout` and the lingering
    /// ones whose time is up.
    pub fn expire(&mut self, now: Instant, idle_timeout: Duration) {
        self.waiting
            .retain(|c| now.duration_since(c.idle_since) < idle_timeout);
        self.lingering.retain(|l| now < l.until);
    }

    /// When [`Held::expire`] next has something to close.
    pub fn next_expiry(&self, idle_timeout: Duration) -> Option<Instant> {
        let idle = self.waiting.iter().map(|c| c.idle_since + idle_timeout);
        let lingering = self.lingering.iter().map(|l| l.until);
        idle.chain(lingering).min()
    }

    /// Closes every waiting connection (at a stop: none of them gets an answer).
    pub fn drop_waiting(&mut self) {
        self.waiting.clear();
    }
}

/// The index of the earliest time among the eligible entries.
fn oldest(entries: impl Iterator<Item = (bool, Instant)>) -> Option<usize> {
    entries
        .enumerate()
        .filter(|(_, (eligible, _))| *eligible)
        .min_by_key(|(_, (_, at))| *at)
        .map(|(index, _)| index)
}

/// Reads and drops what a lingering connection's client sent: false once it has
/// closed (or broken), true while it may send more.
fn drain(connection: &Connection) -> bool {
    let mut sink = [0; 64 * 1024];
    let mut drained = 0;
    while drained < LINGER_BUDGET {
        match (&connection.stream).read(&mut sink) {
            Ok(0) => return false,
            Ok(n) => drained += n,
            Err(error) if error.kind() == ErrorKind::WouldBlock => return true,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}
