//! The owner thread's loop. It owns the files, accepts connections (at the cap, by
//! evicting the longest-idle one), reads request heads and bodies from every held
//! connection without ever blocking on one (an idle client delays nobody), decides
//! each response there (lending the file's range) and hands it to a worker; the
//! connection comes back for its next request. On a stop request (or after
//! `--requests N`) it takes no new connections or requests and drains: the sends
//! in flight get up to the drain timeout (a second stop request ends that at once),
//! then the rest are cut, and each file closes once its loans are back.

use super::args::Config;
use super::connection::Connection;
use super::files::{Files, Response};
use super::held::Held;
use super::http::{self, Body};
use super::report::Report;
use super::shutdown::StopSource;
use super::wake::{self, Wakeup};
use super::workers::{Finished, Job, Outcome, Workers};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{listen, Backlog};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// How long to stop accepting after the process ran out of fds or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How long closing the files may wait for their loans once every send has ended
/// or been cut (the loans come back as the workers drop the cut sends).
const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// Serves `config` on this thread (the files' owner) until `stop` is readable or the
/// request limit is reached, then drains. Calls `ready` with the bound address once
/// connections are accepted. The error of a file that cannot be served names it.
pub fn serve(
    config: &Config,
    stop: &impl StopSource,
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
    // std listens with a backlog of 128; a burst of connects while the owner is
    // busy (or off the CPU) would overflow it, and the kernel then drops SYNs that
    // the clients resend only after a second. SOMAXCONN instead (listen again on a
    // listening socket only changes its backlog).
    listen(&listener, Backlog::MAXCONN)?;
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
        held: Held::default(),
        at_workers: 0,
        accept_paused_until: None,
        stopping: false,
        report: Report::default(),
    };
    let first = owner.run(&listener, stop, &wakeup, &finished);
    let began = Instant::now();
    owner.stopping = true;
    // No new connections, and the ones waiting for a request get none.
    drop(listener);
    owner.held.drop_waiting();
    if let Some(name) = first {
        eprintln!(
            "serve_regions: {name}: stopping; sends in flight get up to {:?} (a second signal stops at once)",
            config.drain_timeout
        );
        owner.report.stops.push(name);
    }
    if let Some(name) = owner.drain(stop, &wakeup, &finished) {
        eprintln!("serve_regions: {name}: stopping at once");
        owner.report.stops.push(name);
    }

    let Owner {
        files,
        workers,
        held,
        mut report,
        ..
    } = owner;
    drop(held);
    // Whatever is still being sent is cut now; each file closes once the cut
    // sends' loans are back, so nothing is closed under a send or closed twice.
    workers.cut();
    let draining = workers.stop();
    let closed = files.close_all(CLOSE_BOUND);
    draining.join()?;
    for done in finished.try_iter() {
        report.record(done.outcome);
    }
    report.drained_in = Some(began.elapsed());
    closed?;
    Ok(report)
}

struct Owner<'c> {
    config: &'c Config,
    files: Files,
    workers: Workers,
    /// Connections no worker holds.
    held: Held,
    /// Connections a worker holds.
    at_workers: usize,
    accept_paused_until: Option<Instant>,
    /// Stopping: no more requests are read.
    stopping: bool,
    report: Report,
}

impl Owner<'_> {
    /// Serves until the limit or a stop request; returns the stop request's name.
    fn run(
        &mut self,
        listener: &TcpListener,
        stop: &impl StopSource,
        wakeup: &Wakeup,
        finished: &Receiver<Finished>,
    ) -> Option<String> {
        while !self.limit_reached() {
            let now = Instant::now();
            let listen = if self.accepting(now) {
                PollFlags::POLLIN
            } else {
                PollFlags::empty()
            };
            let mut fds = vec![
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                PollFd::new(wakeup.as_fd(), PollFlags::POLLIN),
                PollFd::new(listener.as_fd(), listen),
            ];
            fds.extend(self.held.poll_fds());
            let wake_at = self.held.next_expiry(self.config.idle_timeout);
            let events = poll_ready(
                &mut fds,
                timeout(now, wake_at.into_iter().chain(self.accept_paused_until)),
            );
            if events[0] {
                if let Some(name) = stop.take_stop() {
                    return Some(name);
                }
            }
            // Before anything else changes what `held` holds, so `events` match it.
            for connection in self.held.ready(&events[3..]) {
                self.read_request(connection);
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
            self.held.expire(Instant::now(), self.config.idle_timeout);
        }
        None
    }

    /// After the stop: waits for the sends in flight and the lingering closes, up
    /// to the drain timeout. Returns a second stop request's name if one came.
    fn drain(
        &mut self,
        stop: &impl StopSource,
        wakeup: &Wakeup,
        finished: &Receiver<Finished>,
    ) -> Option<String> {
        let deadline = Instant::now() + self.config.drain_timeout;
        while self.at_workers > 0 || !self.held.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let mut fds = vec![
                PollFd::new(stop.as_fd(), PollFlags::POLLIN),
                PollFd::new(wakeup.as_fd(), PollFlags::POLLIN),
            ];
            fds.extend(self.held.poll_fds());
            let wake_at = self.held.next_expiry(self.config.idle_timeout);
            let events = poll_ready(
                &mut fds,
                timeout(now, wake_at.into_iter().chain([deadline])),
            );
            if events[0] {
                if let Some(name) = stop.take_stop() {
                    return Some(name);
                }
            }
            // Nothing waits for a request now: only lingering closes are held.
            drop(self.held.ready(&events[2..]));
            if events[1] {
                wakeup.drain();
                for done in finished.try_iter() {
                    self.take_back(done);
                }
            }
            self.held.expire(Instant::now(), self.config.idle_timeout);
        }
        None
    }

    fn limit_reached(&self) -> bool {
        self.config
            .requests
            .is_some_and(|limit| self.report.requests >= limit)
    }

    fn full(&self) -> bool {
        self.held.len() + self.at_workers >= self.config.max_connections
    }

    fn accepting(&mut self, now: Instant) -> bool {
        if self.accept_paused_until.is_some_and(|until| now < until) {
            return false;
        }
        self.accept_paused_until = None;
        !self.full() || self.held.can_evict()
    }

    fn accept(&mut self, listener: &TcpListener) {
        loop {
            let full = self.full();
            if full && !self.held.can_evict() {
                // Left in the backlog until a connection ends.
                return;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    let Ok(connection) = Connection::new(stream) else {
                        continue;
                    };
                    if full && self.held.evict() {
                        self.report.evicted += 1;
                    }
                    self.report.connections += 1;
                    self.held.wait(connection);
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

    /// Reads what the client sent and answers a complete request.
    fn read_request(&mut self, mut connection: Connection) {
        // A broken connection is dropped: there is nobody to answer.
        if connection.fill().is_ok() {
            self.answer(connection);
        }
    }

    /// Answers the request at the start of `connection.unread` once its head is
    /// complete and its body read; until then holds the connection for more.
    fn answer(&mut self, mut connection: Connection) {
        if connection.pending.is_none() {
            match http::parse_request(&connection.unread) {
                Ok(None) => return self.hold(connection),
                Err(bad) => return self.dispatch(connection, Files::refuse(bad)),
                Ok(Some((request, used))) => {
                    connection.unread.drain(..used);
                    match request.body {
                        Body::None => {}
                        Body::Length(length) if length <= self.config.max_body => {
                            connection.body_left = length;
                        }
                        body => return self.dispatch(connection, Files::refuse_body(body)),
                    }
                    connection.pending = Some(request);
                }
            }
        }
        connection.discard_body();
        if connection.body_left > 0 {
            return self.hold(connection);
        }
        let Some(mut request) = connection.pending.take() else {
            unreachable!("a request is pending here");
        };
        // A client that shut down its sending side gets an answer to every complete
        // request it sent; the last one closes the connection.
        if connection.client_closed && http::parse_request(&connection.unread) == Ok(None) {
            request.keep_alive = false;
        }
        let response = self.files.respond(&request);
        self.dispatch(connection, response);
    }

    /// Holds a connection for the rest of its request, unless the client closed
    /// (nothing more is coming, so there is nothing to answer).
    fn hold(&mut self, connection: Connection) {
        if !connection.client_closed {
            self.held.wait(connection);
        }
    }

    fn dispatch(&mut self, connection: Connection, response: Response) {
        self.report.requests += 1;
        self.at_workers += 1;
        self.workers.send(Job {
            connection,
            response,
        });
    }

    /// A worker is done with a connection: read its next request, or close it.
    fn take_back(&mut self, done: Finished) {
        self.at_workers -= 1;
        let answered = matches!(done.outcome, Outcome::Sent(_) | Outcome::Headless);
        self.report.record(done.outcome);
        let mut connection = done.connection;
        if done.keep_alive && !self.stopping && !self.limit_reached() {
            connection.idle_since = Instant::now();
            // A pipelining client may have sent the next request already.
            self.answer(connection);
        } else if answered {
            self.held.linger(connection);
        }
    }
}

/// Polls `fds`; returns which turned ready.
fn poll_ready(fds: &mut [PollFd<'_>], timeout: PollTimeout) -> Vec<bool> {
    match poll(fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => {}
        Err(errno) => panic!("poll failed: {errno}"),
    }
    fds.iter()
        .map(|fd| fd.revents().is_some_and(|events| !events.is_empty()))
        .collect()
}

/// A poll timeout that ends just after the earliest of `times`.
fn timeout(now: Instant, times: impl Iterator<Item = Instant>) -> PollTimeout {
    match times.min() {
        None => PollTimeout::NONE,
        Some(at) => {
            let wait = at.saturating_duration_since(now) + Duration::from_millis(1);
            PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX)
        }
    }
}
