//! The workers: each takes responses (a head and a `LentRegion` of a file) from the
//! owner and sends them on non-blocking sockets, many at once, so a client that
//! reads slowly holds up only its own response. The region's loan returns when its
//! send ends; the connection goes back to the owner for its next request.

use super::connection::Connection;
use super::files::Response;
use super::wake::{self, Waker, Wakeup};
use fdlend::io::{SendPath, SendProgress};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io::{self, ErrorKind, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A send that moves no byte for this long is dropped (the client stopped reading).
/// A stop does not wait for it: the drain timeout cuts every send still running.
pub const SEND_STALL: Duration = Duration::from_secs(30);

/// One response to send on one connection.
pub struct Job {
    /// Where to send it.
    pub connection: Connection,
    /// What to send.
    pub response: Response,
}

/// How a response's send ended.
#[derive(Debug)]
pub enum Outcome {
    /// Head and body sent; the body by this path.
    Sent(SendPath),
    /// Head sent; there was no body.
    Headless,
    /// The send failed or stalled (the connection is closed).
    Failed(String),
    /// A stop's drain timeout ended the send (the connection is closed).
    Cut,
}

/// A job done, handed back to the owner.
pub struct Finished {
    /// The connection, to read its next request from if `keep_alive`.
    pub connection: Connection,
    /// Whether to read another request from it.
    pub keep_alive: bool,
    /// How the send ended.
    pub outcome: Outcome,
}

/// The worker threads and a queue to each.
pub struct Workers {
    queues: Vec<(Sender<Job>, Waker)>,
    threads: Vec<JoinHandle<()>>,
    next: usize,
    /// Set by [`Workers::cut`]: drop every send held.
    cut: Arc<AtomicBool>,
}

impl Workers {
    /// Starts `count` workers that report each finished job on `finished` and then
    /// wake the owner.
    pub fn spawn(count: usize, finished: &Sender<Finished>, owner: &Waker) -> io::Result<Workers> {
        let mut workers = Workers {
            queues: Vec::new(),
            threads: Vec::new(),
            next: 0,
            cut: Arc::new(AtomicBool::new(false)),
        };
        for index in 0..count.max(1) {
            let (jobs, queue) = mpsc::channel();
            let (waker, wakeup) = wake::pair()?;
            let (finished, owner) = (finished.clone(), owner.clone());
            let cut = Arc::clone(&workers.cut);
            let thread = std::thread::Builder::new()
                .name(format!("sender-{index}"))
                .spawn(move || run(&queue, &wakeup, &cut, &finished, &owner))?;
            workers.queues.push((jobs, waker));
            workers.threads.push(thread);
        }
        Ok(workers)
    }

    /// Hands `job` to the next worker in turn.
    pub fn send(&mut self, job: Job) {
        let (jobs, waker) = &self.queues[self.next];
        self.next = (self.next + 1) % self.queues.len();
        // A worker only exits once its queue is closed, which only `finish` does.
        jobs.send(job)
            .unwrap_or_else(|_| unreachable!("a worker exited early"));
        waker.wake();
    }

    /// Makes every worker drop the sends it holds now, each reported as
    /// [`Outcome::Cut`] (which returns its loan and closes its connection).
    pub fn cut(&self) {
        // Release pairs with the Acquire load in `run`; the wake that follows makes
        // each worker look.
        self.cut.store(true, Ordering::Release);
        for (_, waker) in &self.queues {
            waker.wake();
        }
    }

    /// Closes the queues: each worker finishes the sends it holds, then exits.
    pub fn stop(self) -> Draining {
        for (jobs, waker) in self.queues {
            drop(jobs);
            waker.wake();
        }
        Draining {
            threads: self.threads,
        }
    }
}

/// Workers finishing their last sends.
pub struct Draining {
    threads: Vec<JoinHandle<()>>,
}

impl Draining {
    /// Waits until every worker has exited.
    pub fn join(self) -> io::Result<()> {
        for thread in self.threads {
            thread
                .join()
                .map_err(|_| io::Error::other("a sender thread panicked"))?;
        }
        Ok(())
    }
}

/// A job being sent.
struct InFlight {
    job: Job,
    head_sent: usize,
    last_progress: Instant,
    /// Worth trying now (new, or its socket polled writable).
    ready: bool,
}

impl InFlight {
    /// Sends what the socket takes now: `None` while more remains.
    fn progress(&mut self) -> Option<Outcome> {
        let Job {
            connection,
            response,
        } = &mut self.job;
        while self.head_sent < response.head.len() {
            match (&connection.stream).write(&response.head[self.head_sent..]) {
                Ok(0) => return Some(Outcome::Failed("the client closed".to_owned())),
                Ok(n) => {
                    self.head_sent += n;
                    self.last_progress = Instant::now();
                }
                Err(error) if error.kind() == ErrorKind::WouldBlock => return None,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Some(Outcome::Failed(error.to_string())),
            }
        }
        let Some(region) = response.body.take() else {
            return Some(Outcome::Headless);
        };
        match region.send_to(&connection.stream) {
            Ok(SendProgress::Done { path, .. }) => Some(Outcome::Sent(path)),
            Ok(SendProgress::Blocked { sent, rest, .. }) => {
                if sent > 0 {
                    self.last_progress = Instant::now();
                }
                response.body = Some(rest);
                None
            }
            Err(error) => Some(Outcome::Failed(error.to_string())),
        }
    }
}

/// One worker: takes jobs, pushes every send as far as its socket allows, sleeps in
/// `poll` until a socket is writable or a job arrives; exits once its queue is
/// closed and every send it holds has ended.
fn run(
    queue: &Receiver<Job>,
    wakeup: &Wakeup,
    cut: &AtomicBool,
    finished: &Sender<Finished>,
    owner: &Waker,
) {
    let mut sends: Vec<InFlight> = Vec::new();
    let mut open = true;
    loop {
        // Drain before taking jobs: a wake that comes after this sees its job.
        wakeup.drain();
        while open {
            match queue.try_recv() {
                Ok(job) => sends.push(InFlight {
                    job,
                    head_sent: 0,
                    last_progress: Instant::now(),
                    ready: true,
                }),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        // Acquire pairs with the Release store in `Workers::cut`.
        if cut.load(Ordering::Acquire) {
            for send in sends.drain(..) {
                hand_back(send.job, Outcome::Cut, finished, owner);
            }
        }
        let now = Instant::now();
        let mut index = 0;
        while index < sends.len() {
            let send = &mut sends[index];
            let outcome = if send.ready {
                send.progress()
            } else if now.duration_since(send.last_progress) >= SEND_STALL {
                Some(Outcome::Failed(format!("no progress for {SEND_STALL:?}")))
            } else {
                None
            };
            match outcome {
                None => {
                    send.ready = false;
                    index += 1;
                }
                Some(outcome) => hand_back(sends.swap_remove(index).job, outcome, finished, owner),
            }
        }
        if !open && sends.is_empty() {
            return;
        }
        let next_stall = sends
            .iter()
            .map(|send| (send.last_progress + SEND_STALL).saturating_duration_since(now))
            .min();
        let timeout = next_stall.map_or(PollTimeout::NONE, |wait| {
            PollTimeout::try_from(wait + Duration::from_millis(1)).unwrap_or(PollTimeout::MAX)
        });
        let mut fds: Vec<PollFd> = sends
            .iter()
            .map(|send| PollFd::new(send.job.connection.stream.as_fd(), PollFlags::POLLOUT))
            .collect();
        // Once the queue is closed the owner's end of the wakeup pair is gone, and
        // a hung-up socket polls readable forever: stop watching it.
        if open {
            fds.push(PollFd::new(wakeup.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => panic!("poll failed: {errno}"),
        }
        let ready: Vec<bool> = fds[..sends.len()]
            .iter()
            .map(|fd| fd.revents().is_some_and(|events| !events.is_empty()))
            .collect();
        drop(fds);
        for (send, ready) in sends.iter_mut().zip(ready) {
            send.ready = ready;
        }
    }
}

/// Reports a job's end to the owner with its connection.
fn hand_back(job: Job, outcome: Outcome, finished: &Sender<Finished>, owner: &Waker) {
    let Job {
        connection,
        response,
    } = job;
    // Dropping `response` here returns an unfinished send's loan.
    let keep_alive = response.keep_alive && matches!(outcome, Outcome::Sent(_) | Outcome::Headless);
    let _ = finished.send(Finished {
        connection,
        keep_alive,
        outcome,
    });
    owner.wake();
}
