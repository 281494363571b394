//! The owner thread's loop. It owns the files, accepts connections, reads request
//! heads from every waiting connection without ever blocking on one (an idle client
//! delays nobody), decides each response there (lending the file's range) and hands
//! it to a worker; the connection comes back for its next request. When the stop fd
//! turns readable (or after `--requests N`) it stops: no new connections or
//! requests, the sends in flight finish, and each file closes once its loans are
//! back.

use super::args::Config;
use super::connection::Connection;
use super::files::{Files, Response};
use super::http::{self, MAX_HEAD};
use super::wake::{self, Wakeup};
use super::workers::{Finished, Job, Outcome, Workers};
use fdlend::io::SendPath;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long to stop accepting after the process ran out of fds or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a finished server did.
#[derive(Debug, Default)]
pub struct Report {
    /// Connections accepted.
    pub connections: usize,
    /// Requests answered (any status).
    pub requests: usize,
    /// Bodies sent, by the path the kernel let `send_to` take.
    pub paths: HashMap<SendPath, usize>,
    /// Responses whose send failed (the client hung up or stopped reading).
    pub failed: usize,
}

impl Report {
    fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Sent(path) => *self.paths.entry(path).or_default() += 1,
            Outcome::Headless => {}
            Outcome::Failed(_) => self.failed += 1,
        }
    }
}

/// Serves `config` on this thread (the files' owner) until `stop` is readable or the
/// request limit is reached, then drains. Calls `ready` with the bound address once
/// connections are accepted. The error of a file that cannot be served names it.
pub fn serve(
    config: &Config,
    stop: BorrowedFd<'_>,
    ready: impl FnOnce(SocketAddr),
) -> io::Result<Report> {
    let files = Files::open(&config.files)?;
    let listener = TcpListener::bind(("127.0.0.1", config.port)).map_err(|error| {
        let port = config.port;
        io::Error::new(
            error.kind(),
            format!("cannot listen on 127.0.0.1:{port}: {error}"),
        )
    })?;
    listener.set_nonblocking(true)?;
    let (waker, wakeup) = wake::pair()?;
    let (finished_tx, finished) = mpsc::channel();
    let workers = Workers::spawn(config.workers, &finished_tx, &waker)?;
    drop(finished_tx);
    ready(listener.local_addr()?);

    let mut owner = Owner {
        config,
        files,
        workers,
        waiting: Vec::new(),
        at_workers: 0,
        accept_paused_until: None,
        report: Report::default(),
    };
    owner.run(&listener, stop, &wakeup, &finished);

    let Owner {
        files,
        workers,
        waiting,
        mut report,
        ..
    } = owner;
    // No new connections, and the ones waiting for a request get none.
    drop(listener);
    drop(waiting);
    let draining = workers.stop();
    // Each file closes once every region lent from it is back: the sends in flight
    // finish on an open file, and nothing closes it twice.
    let closed = files.close_all();
    draining.join()?;
    for done in finished.try_iter() {
        report.record(done.outcome);
    }
    closed?;
    Ok(report)
}

struct Owner<'c> {
    config: &'c Config,
    files: Files,
    workers: Workers,
    /// Connections waiting for (the rest of) a request head.
    waiting: Vec<Connection>,
    /// Connections a worker holds.
    at_workers: usize,
    accept_paused_until: Option<Instant>,
    report: Report,
}

impl Owner<'_> {
    fn run(
        &mut self,
        listener: &TcpListener,
        stop: BorrowedFd<'_>,
        wakeup: &Wakeup,
        finished: &Receiver<Finished>,
    ) {
        while !self.limit_reached() {
            let now = Instant::now();
            let accepting = self.accepting(now);
            let mut fds = vec![
                PollFd::new(stop, PollFlags::POLLIN),
                PollFd::new(wakeup.as_fd(), PollFlags::POLLIN),
                PollFd::new(
                    listener.as_fd(),
                    if accepting {
                        PollFlags::POLLIN
                    } else {
                        PollFlags::empty()
                    },
                ),
            ];
            fds.extend(
                self.waiting
                    .iter()
                    .map(|c| PollFd::new(c.stream.as_fd(), PollFlags::POLLIN)),
            );
            match poll(&mut fds, self.timeout(now)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(errno) => panic!("poll failed: {errno}"),
            }
            let events: Vec<bool> = fds
                .iter()
                .map(|fd| fd.revents().is_some_and(|events| !events.is_empty()))
                .collect();
            drop(fds);
            if events[0] {
                return;
            }
            // Readable connections first, while `waiting` still matches `events`;
            // from the highest index, so `swap_remove` moves only handled ones.
            for index in (0..self.waiting.len()).rev() {
                if events[3 + index] {
                    let connection = self.waiting.swap_remove(index);
                    self.read_request(connection);
                }
            }
            if events[1] {
                wakeup.drain();
                for done in finished.try_iter() {
                    self.take_back(done);
                }
            }
            if events[2] {
                self.accept(listener);
            }
            let now = Instant::now();
            let idle_timeout = self.config.idle_timeout;
            self.waiting
                .retain(|c| now.duration_since(c.idle_since) < idle_timeout);
        }
    }

    fn limit_reached(&self) -> bool {
        self.config
            .requests
            .is_some_and(|limit| self.report.requests >= limit)
    }

    fn accepting(&mut self, now: Instant) -> bool {
        if self.accept_paused_until.is_some_and(|until| now < until) {
            return false;
        }
        self.accept_paused_until = None;
        self.waiting.len() + self.at_workers < self.config.max_connections
    }

    /// Until the next idle connection expires (or accepting resumes).
    fn timeout(&self, now: Instant) -> PollTimeout {
        let idle = self
            .waiting
            .iter()
            .map(|c| (c.idle_since + self.config.idle_timeout).saturating_duration_since(now));
        let paused = self
            .accept_paused_until
            .map(|until| until.saturating_duration_since(now));
        match idle.chain(paused).min() {
            None => PollTimeout::NONE,
            Some(wait) => {
                PollTimeout::try_from(wait + Duration::from_millis(1)).unwrap_or(PollTimeout::MAX)
            }
        }
    }

    fn accept(&mut self, listener: &TcpListener) {
        while self.waiting.len() + self.at_workers < self.config.max_connections {
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Ok(connection) = Connection::new(stream) {
                        self.report.connections += 1;
                        self.waiting.push(connection);
                    }
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == ErrorKind::ConnectionAborted => {}
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => {
                    // EMFILE, ENFILE, ENOBUFS...: the pending connection stays queued
                    // and would make `poll` spin; try again a little later.
                    eprintln!("serve_regions: accept failed: {error}; pausing {ACCEPT_BACKOFF:?}");
                    self.accept_paused_until = Some(Instant::now() + ACCEPT_BACKOFF);
                    return;
                }
            }
        }
    }

    /// Reads what the client sent and answers a complete request head.
    fn read_request(&mut self, mut connection: Connection) {
        let mut chunk = [0; 4096];
        let mut closed = false;
        while connection.unread.len() <= MAX_HEAD {
            match (&connection.stream).read(&mut chunk) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => connection.unread.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        self.answer(connection, closed);
    }

    /// Answers the request at the start of `connection.unread`, if it is complete;
    /// else puts the connection back to wait for more (unless the client closed).
    fn answer(&mut self, mut connection: Connection, client_closed: bool) {
        let response = match http::parse_request(&connection.unread) {
            Ok(None) => {
                if !client_closed {
                    self.waiting.push(connection);
                }
                return;
            }
            Ok(Some((mut request, used))) => {
                connection.unread.drain(..used);
                // A client that shut down its side still gets its answer.
                request.keep_alive &= !client_closed;
                self.files.respond(&request)
            }
            Err(bad) => Files::refuse(bad),
        };
        self.report.requests += 1;
        self.dispatch(connection, response);
    }

    fn dispatch(&mut self, connection: Connection, response: Response) {
        self.at_workers += 1;
        self.workers.send(Job {
            connection,
            response,
        });
    }

    /// A worker is done with a connection: read its next request, or close it.
    fn take_back(&mut self, done: Finished) {
        self.at_workers -= 1;
        self.report.record(done.outcome);
        if done.keep_alive && !self.limit_reached() {
            let mut connection = done.connection;
            connection.idle_since = Instant::now();
            // A pipelining client may have sent the next request already.
            self.answer(connection, false);
        }
    }
}
