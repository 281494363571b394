//! One run of the rate mode: an owner thread hands 4 KiB regions of a page-cached file
//! to worker threads in batches, with a `dup()`, a loan, or no handle per hand-off;
//! either as fast as the workers take them, or paced at a target rate with holds.

use crate::config::BLOCK;
use crate::cpu_clock::thread_cpu;
use crate::data_file::mix;
use crate::rate_workers::{work, Batch, HandOff, Handle, WorkerTally};
use fdlend::Lender;
use nix::errno::Errno;
use nix::sys::resource::{getrlimit, Resource};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum HandleKind {
    Dup,
    Loan,
    Bare,
}

impl HandleKind {
    pub fn name(self) -> &'static str {
        match self {
            HandleKind::Dup => "dup()",
            HandleKind::Loan => "loan",
            HandleKind::Bare => "no handle",
        }
    }
}

/// How one run is driven.
#[derive(Clone, Copy, Debug)]
pub struct Pace {
    pub workers: usize,
    pub batch: usize,
    pub duration: Duration,
    /// `None`: as fast as the workers take batches (bounded queues push back).
    pub target_per_s: Option<f64>,
    /// How long a worker keeps each batch's handles after reading them.
    pub hold: Duration,
}

/// Batches queued per worker before the owner waits: keeps the unpaced runs' fds in
/// flight small, so only the held runs meet the fd limit.
const QUEUE_DEPTH: usize = 4;

pub struct RateRun {
    pub kind: HandleKind,
    pub seconds: f64,
    /// Hand-offs the owner tried to make (made + refused).
    pub offered: u64,
    pub handed: u64,
    pub refused: u64,
    pub owner_cpu: Duration,
    pub worker_cpu: Duration,
    pub reads: u64,
    pub wrong_bytes: u64,
    pub peak_in_flight: u64,
    pub peak_fds: u64,
    pub fd_limit: u64,
}

impl RateRun {
    /// Folds another run of the same kind into this one.
    pub fn absorb(&mut self, other: RateRun) {
        debug_assert_eq!(self.kind, other.kind);
        self.seconds += other.seconds;
        self.offered += other.offered;
        self.handed += other.handed;
        self.refused += other.refused;
        self.owner_cpu += other.owner_cpu;
        self.worker_cpu += other.worker_cpu;
        self.reads += other.reads;
        self.wrong_bytes += other.wrong_bytes;
        self.peak_in_flight = self.peak_in_flight.max(other.peak_in_flight);
        self.peak_fds = self.peak_fds.max(other.peak_fds);
    }
}

/// What the owner thread reports back.
struct OwnerTally {
    seconds: f64,
    offered: u64,
    handed: u64,
    refused: u64,
    cpu: Duration,
    peak_in_flight: u64,
}

/// Runs one kind for `pace.duration` with fresh threads, so nothing carries over.
pub fn run_rate(
    path: &Path,
    kind: HandleKind,
    pace: Pace,
) -> Result<RateRun, Box<dyn std::error::Error>> {
    let shared = File::open(path)?;
    let blocks = shared.metadata()?.len() / BLOCK as u64;
    // The lender lives on the owner thread (it is `!Send`): only its file moves there.
    let lender_file = match kind {
        HandleKind::Loan => Some(File::open(path)?),
        _ => None,
    };
    let fd_limit = getrlimit(Resource::RLIMIT_NOFILE)?.0;
    let returned = AtomicU64::new(0);
    let stop_sampler = AtomicBool::new(false);
    let baseline_fds = count_fds().unwrap_or(0);

    let (owner, tallies, peak_fds) = thread::scope(|scope| {
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..pace.workers {
            let (send, receive) = mpsc::sync_channel::<Batch>(QUEUE_DEPTH);
            senders.push(send);
            let (shared, returned) = (&shared, &returned);
            workers.push(scope.spawn(move || work(shared, receive, pace.hold, returned)));
        }
        let sampler = scope.spawn(|| sample_fds(&stop_sampler, baseline_fds, fd_limit));
        let owner = scope.spawn(|| {
            let lender = lender_file
                .map(Lender::try_from)
                .transpose()
                .map_err(|e| format!("register: {e}"))?;
            let tally = own(
                kind,
                pace,
                blocks,
                &shared,
                lender.as_ref(),
                senders,
                &returned,
            )?;
            if let Some(lender) = lender {
                // The owner's close waits until the workers have returned every loan.
                lender.close_wait().map_err(|e| format!("close: {e}"))?;
            }
            Ok::<_, String>(tally)
        });
        let owner = owner.join().expect("owner thread panicked");
        let tallies: Vec<WorkerTally> = workers
            .into_iter()
            .map(|worker| worker.join().expect("worker thread panicked"))
            .collect();
        stop_sampler.store(true, Ordering::Relaxed);
        (owner, tallies, sampler.join().expect("sampler panicked"))
    });
    let owner = owner?;
    let reads: u64 = tallies.iter().map(|t| t.reads).sum();
    if reads != owner.handed {
        return Err(format!("{} hand-offs made but {reads} read", owner.handed).into());
    }
    Ok(RateRun {
        kind,
        seconds: owner.seconds,
        offered: owner.offered,
        handed: owner.handed,
        refused: owner.refused,
        owner_cpu: owner.cpu,
        worker_cpu: tallies.iter().map(|t| t.cpu).sum(),
        reads,
        wrong_bytes: tallies.iter().map(|t| t.wrong_bytes).sum(),
        peak_in_flight: owner.peak_in_flight,
        peak_fds,
        fd_limit,
    })
}

/// The owner's loop: make `pace.batch` hand-offs, queue them to the next worker
/// (round robin), repeat; paced per batch when there is a target rate.
fn own(
    kind: HandleKind,
    pace: Pace,
    blocks: u64,
    shared: &File,
    lender: Option<&Lender>,
    senders: Vec<mpsc::SyncSender<Batch>>,
    returned: &AtomicU64,
) -> Result<OwnerTally, String> {
    let batch_period = pace
        .target_per_s
        .map(|rate| Duration::from_secs_f64(pace.batch as f64 / rate));
    let cpu_before = thread_cpu();
    let start = Instant::now();
    let (mut offered, mut handed, mut refused, mut peak_in_flight) = (0u64, 0u64, 0u64, 0u64);
    let mut batches = 0u32;
    loop {
        let mut now = Instant::now();
        if now - start >= pace.duration {
            break;
        }
        if let Some(period) = batch_period {
            let due = start + period * batches;
            if due > now {
                thread::sleep(due - now);
                now = Instant::now();
            }
        }
        let mut hand_offs = Vec::with_capacity(pace.batch);
        for _ in 0..pace.batch {
            offered += 1;
            let offset = (mix(offered) % blocks) * BLOCK as u64;
            let handle = match kind {
                HandleKind::Dup => match nix::unistd::dup(shared.as_fd()) {
                    Ok(fd) => Handle::Dup(fd),
                    Err(Errno::EMFILE) => {
                        refused += 1;
                        continue;
                    }
                    Err(errno) => return Err(format!("dup: {errno}")),
                },
                HandleKind::Loan => {
                    let lender = lender.expect("a loan run has a lender");
                    Handle::Loan(lender.loan().map_err(|e| format!("loan: {e}"))?)
                }
                HandleKind::Bare => Handle::Bare,
            };
            hand_offs.push(HandOff { handle, offset });
        }
        handed += hand_offs.len() as u64;
        // Relaxed: an estimate for the report; the exact count is in the workers.
        let in_flight = handed.saturating_sub(returned.load(Ordering::Relaxed));
        peak_in_flight = peak_in_flight.max(in_flight);
        let batch = Batch {
            hand_offs,
            queued: now,
        };
        if senders[batches as usize % senders.len()]
            .send(batch)
            .is_err()
        {
            return Err("a worker hung up early".into());
        }
        batches += 1;
    }
    Ok(OwnerTally {
        seconds: start.elapsed().as_secs_f64(),
        offered,
        handed,
        refused,
        cpu: thread_cpu() - cpu_before,
        peak_in_flight,
    })
}

fn count_fds() -> Result<u64, std::io::Error> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count() as u64)
}

/// The peak of `/proc/self/fd` above `baseline`, sampled every 20 ms (listing 20k
/// entries is not free). When the listing itself is refused with `EMFILE`, every fd
/// the limit allows is in use, and that is the sample.
fn sample_fds(stop: &AtomicBool, baseline: u64, limit: u64) -> u64 {
    let mut peak = 0;
    while !stop.load(Ordering::Relaxed) {
        let count = match count_fds() {
            Ok(count) => count,
            Err(error) if error.raw_os_error() == Some(libc::EMFILE) => limit,
            Err(_) => 0,
        };
        peak = peak.max(count.saturating_sub(baseline));
        thread::sleep(Duration::from_millis(20));
    }
    peak
}
