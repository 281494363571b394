//! The worker pool: std threads that take hand-offs from the executor, hold each one
//! as a slow client would, then read (or `sendfile`) its range and let go of the fd.

use crate::config::{Config, BLOCK};
use crate::cpu_clock::thread_cpu;
use crate::measure::Live;
use fdlend::Loan;
use std::collections::VecDeque;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

/// What a worker gets: the fd (as a dup or a loan) and the range to read.
pub enum Handle {
    Dup(OwnedFd),
    Loan(Loan),
}

impl AsFd for Handle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Handle::Dup(fd) => fd.as_fd(),
            Handle::Loan(loan) => loan.as_fd(),
        }
    }
}

pub struct HandOff {
    pub handle: Handle,
    pub offset: u64,
    pub decided: Instant,
}

/// One sender per worker, and the workers, each returning its decision-to-release
/// latencies in ns and its thread's CPU time.
pub type Workers = (
    Vec<mpsc::Sender<HandOff>>,
    Vec<thread::JoinHandle<(Vec<u64>, Duration)>>,
);

/// Each worker takes hand-offs in order, reads the first block at once, holds the
/// hand-off for `hold` (a slow client), then reads (or sends) the whole range and
/// lets go of the fd.
pub fn start_workers(
    config: &Config,
    live: &Arc<Live>,
    sink: Option<&Sink>,
) -> std::io::Result<Workers> {
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..config.threads {
        let (send, receive) = mpsc::channel::<HandOff>();
        let socket = sink.map(Sink::connect).transpose()?;
        let (live, hold, region) = (Arc::clone(live), config.hold, config.region);
        senders.push(send);
        workers.push(thread::spawn(move || {
            let mut buf = AlignedBuf::new(region);
            let mut held: VecDeque<(Instant, HandOff)> = Default::default();
            let mut latencies = Vec::new();
            let mut open = true;
            loop {
                while held.front().is_some_and(|(due, _)| *due <= Instant::now()) {
                    let (_, hand_off) = held.pop_front().expect("front checked");
                    let sent = finish(&hand_off, buf.get(), socket.as_ref());
                    live.sent_bytes.fetch_add(sent, Ordering::Relaxed);
                    latencies.push(hand_off.decided.elapsed().as_nanos() as u64);
                    drop(hand_off);
                    live.returned.fetch_add(1, Ordering::Relaxed);
                }
                let until_due = held
                    .front()
                    .map(|(due, _)| due.saturating_duration_since(Instant::now()));
                if !open {
                    match until_due {
                        Some(wait) => thread::sleep(wait),
                        None => break,
                    }
                    continue;
                }
                match receive.recv_timeout(until_due.unwrap_or(Duration::from_millis(50))) {
                    Ok(hand_off) => {
                        let first = &mut buf.get()[..BLOCK];
                        let _ = pread_full(&hand_off.handle, first, hand_off.offset);
                        held.push_back((Instant::now() + hold, hand_off));
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    Err(mpsc::RecvTimeoutError::Disconnected) => open = false,
                }
            }
            (latencies, thread_cpu())
        }));
    }
    Ok((senders, workers))
}

/// Reads (or sends) the whole range; the bytes sent to the socket, if any.
fn finish(hand_off: &HandOff, buf: &mut [u8], socket: Option<&TcpStream>) -> u64 {
    match socket {
        Some(socket) => {
            let mut offset = hand_off.offset as i64;
            let end = offset + buf.len() as i64;
            while offset < end {
                let count = (end - offset) as usize;
                match nix::sys::sendfile::sendfile(
                    socket,
                    &hand_off.handle,
                    Some(&mut offset),
                    count,
                ) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            (offset - hand_off.offset as i64) as u64
        }
        None => {
            let _ = pread_full(&hand_off.handle, buf, hand_off.offset);
            0
        }
    }
}

fn pread_full(fd: impl AsFd, buf: &mut [u8], offset: u64) -> nix::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match nix::sys::uio::pread(fd.as_fd(), &mut buf[done..], (offset + done as u64) as i64)? {
            0 => break,
            n => done += n,
        }
    }
    Ok(done)
}

/// A page-aligned buffer, as `O_DIRECT` reads require.
struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + BLOCK];
        let start = raw.as_ptr().align_offset(BLOCK);
        AlignedBuf { raw, start, len }
    }

    fn get(&mut self) -> &mut [u8] {
        &mut self.raw[self.start..self.start + self.len]
    }
}

/// A loopback TCP sink that discards what workers `sendfile` to it.
pub struct Sink {
    address: SocketAddr,
}

impl Sink {
    pub fn start() -> std::io::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    let mut stream = stream;
                    let mut buf = vec![0u8; 1 << 16];
                    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        });
        Ok(Sink { address })
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        TcpStream::connect(self.address)
    }
}
