//! The rate mode's workers: std threads that take batches of hand-offs from the owner,
//! really `pread` every 4 KiB region (and check its bytes), hold the batch if asked,
//! then let go of the handles (a `close` for a dup, a count decrement for a loan).

use crate::config::BLOCK;
use crate::cpu_clock::thread_cpu;
use crate::data_file::byte_at;
use fdlend::Loan;
use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How the owner lets a worker reach the file for one hand-off.
pub enum Handle {
    /// A `dup()` of the owner's fd: the worker's drop closes it.
    Dup(OwnedFd),
    /// A loan of the owner's one fd: the worker's drop returns it.
    Loan(Loan),
    /// Nothing: the worker reads the file every worker shares for the whole run. The
    /// floor: what a hand-off costs with no per-hand-off handle at all.
    Bare,
}

pub struct HandOff {
    pub handle: Handle,
    pub offset: u64,
}

/// One wake-up's worth of hand-offs, stamped when the owner queued it.
pub struct Batch {
    pub hand_offs: Vec<HandOff>,
    pub queued: Instant,
}

/// What one worker did over its whole life.
#[derive(Default)]
pub struct WorkerTally {
    pub cpu: Duration,
    pub reads: u64,
    pub wrong_bytes: u64,
}

/// Serves batches until the owner hangs up and every held batch is released. `shared`
/// is the file `Handle::Bare` hand-offs read; `returned` counts released hand-offs.
pub fn work(
    shared: &File,
    batches: Receiver<Batch>,
    hold: Duration,
    returned: &AtomicU64,
) -> WorkerTally {
    let mut tally = WorkerTally::default();
    let mut buf = [0u8; BLOCK];
    let mut held: VecDeque<(Instant, Vec<HandOff>)> = VecDeque::new();
    let release = |hand_offs: Vec<HandOff>| {
        let count = hand_offs.len() as u64;
        drop(hand_offs);
        // Relaxed: only the owner's in-flight estimate and the sampler read it.
        returned.fetch_add(count, Ordering::Relaxed);
    };
    let mut open = true;
    loop {
        let now = Instant::now();
        while held.front().is_some_and(|(due, _)| *due <= now) {
            release(held.pop_front().expect("front checked").1);
        }
        let next_due = held
            .front()
            .map(|(due, _)| due.saturating_duration_since(now));
        let received = match (open, next_due) {
            (false, None) => break,
            (false, Some(wait)) => {
                std::thread::sleep(wait);
                continue;
            }
            (true, None) => batches.recv().map_err(|_| RecvTimeoutError::Disconnected),
            (true, Some(wait)) => batches.recv_timeout(wait),
        };
        let batch = match received {
            Ok(batch) => batch,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                open = false;
                continue;
            }
        };
        for hand_off in &batch.hand_offs {
            let fd = match &hand_off.handle {
                Handle::Dup(fd) => fd.as_fd(),
                Handle::Loan(loan) => loan.as_fd(),
                Handle::Bare => shared.as_fd(),
            };
            let read = nix::sys::uio::pread(fd, &mut buf, hand_off.offset as i64);
            tally.reads += 1;
            let last = hand_off.offset + BLOCK as u64 - 1;
            if read != Ok(BLOCK)
                || buf[0] != byte_at(hand_off.offset)
                || buf[BLOCK - 1] != byte_at(last)
            {
                tally.wrong_bytes += 1;
            }
        }
        if hold.is_zero() {
            release(batch.hand_offs);
        } else {
            held.push_back((batch.queued + hold, batch.hand_offs));
        }
    }
    tally.cpu = thread_cpu();
    tally
}
