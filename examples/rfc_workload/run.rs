//! One run of one mode: the owner serves a paced stream of `O_DIRECT` reads on the
//! executor, hands some off (a `dup()` or a loan) to the workers, then closes.

use crate::config::{Config, BLOCK};
use crate::cpu_clock::{process_cpu, thread_cpu};
use crate::data_file::mix;
use crate::measure::{count_fds, Live, Sampler};
use crate::run_result::{Mode, RunResult};
use crate::workers::{start_workers, HandOff, Handle, Sink};
use fdlend::glommio::LentDmaFile;
use glommio::io::DmaFile;
use nix::errno::Errno;
use nix::sys::resource::{getrlimit, Resource};
use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `mode` for `duration` on the current glommio executor, with its own workers
/// and sampler, so one run's stragglers never count in the next.
pub async fn run_one(
    config: &Config,
    path: &Path,
    mode: Mode,
    duration: Duration,
    sink: Option<&Sink>,
) -> Result<RunResult, Box<dyn std::error::Error>> {
    let limit = getrlimit(Resource::RLIMIT_NOFILE)?.0;
    let label = format!("{} (fd limit {limit})", mode.name());
    let live = Arc::new(Live::default());
    let (senders, workers) = start_workers(config, &live, sink)?;
    let owner = match mode {
        Mode::Lend => Owner::Lent(LentDmaFile::new(DmaFile::open(path).await?)?),
        Mode::Dup => Owner::Plain(DmaFile::open(path).await?),
    };
    let dma = owner.dma();
    let file_len = dma.file_size().await?;
    // Counted after setup, so the peak is the hand-offs' fds alone.
    let baseline_fds = count_fds().unwrap_or(0);
    let sampler = Sampler::start(Arc::clone(&live), baseline_fds, label, duration);

    // The executor's thread runs nothing but this run's tasks until it ends, so its CPU
    // clock over the run is the owner's cost: reads, hand-offs, and queueing.
    let owner_cpu_before = thread_cpu();
    let process_cpu_before = process_cpu();
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let total = (duration.as_secs_f64() * config.rate) as u64;
    let threshold = (config.fraction * u64::MAX as f64) as u64;
    let blocks = file_len / BLOCK as u64;
    let region_blocks = (config.region / BLOCK) as u64;
    let next = Cell::new(0u64);
    let handoff_ns = RefCell::new(Vec::with_capacity(
        (total as f64 * config.fraction) as usize + 16,
    ));
    let handle_ns = RefCell::new(Vec::with_capacity(handoff_ns.borrow().capacity()));
    let read_errors = Cell::new(0u64);
    let other_errors = RefCell::new(Vec::new());

    let serve = || async {
        loop {
            let i = next.get();
            if i >= total {
                break;
            }
            next.set(i + 1);
            let due = start + period.mul_f64(i as f64);
            let now = Instant::now();
            if due > now {
                glommio::timer::sleep(due - now).await;
            }
            let random = mix(i);
            let offset = (random % blocks) * BLOCK as u64;
            match dma.read_at(offset, BLOCK).await {
                Ok(_) => live.reads.fetch_add(1, Ordering::Relaxed),
                Err(_) => {
                    read_errors.set(read_errors.get() + 1);
                    continue;
                }
            };
            if mix(random) >= threshold {
                continue;
            }
            // The hand-off: from the decision to the range being queued for a worker.
            let decided = Instant::now();
            let handle = match &owner {
                Owner::Lent(lent) => lent.loan().map(Handle::Loan).map_err(|e| e.to_string()),
                // SAFETY: `dma` is borrowed from `owner`, which outlives this use, so
                // its fd stays open while the borrow lives.
                Owner::Plain(dma) => {
                    match nix::unistd::dup(unsafe { BorrowedFd::borrow_raw(dma.as_raw_fd()) }) {
                        Ok(fd) => Ok(Handle::Dup(fd)),
                        Err(Errno::EMFILE) => {
                            live.refused.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(errno) => Err(errno.to_string()),
                    }
                }
            };
            let made = decided.elapsed();
            let handle = match handle {
                Ok(handle) => handle,
                Err(error) => {
                    other_errors.borrow_mut().push(error);
                    continue;
                }
            };
            let region_start = (mix(random ^ 1) % (blocks - region_blocks + 1)) * BLOCK as u64;
            let hand_off = HandOff {
                handle,
                offset: region_start,
                decided,
            };
            live.handed.fetch_add(1, Ordering::Relaxed);
            if senders[(i as usize) % senders.len()]
                .send(hand_off)
                .is_err()
            {
                break;
            }
            handoff_ns
                .borrow_mut()
                .push(decided.elapsed().as_nanos() as u64);
            handle_ns.borrow_mut().push(made.as_nanos() as u64);
        }
    };
    let tasks: Vec<_> = (0..32).map(|_| serve()).collect();
    futures_join_all(tasks).await;
    let seconds = start.elapsed().as_secs_f64();
    let owner_cpu = thread_cpu() - owner_cpu_before;

    drop(senders);
    // The owner closes while the last hand-offs are still held: with loans, the close
    // waits for them (woken by the last worker); with dups, they are separate fds.
    let close_wait = match owner {
        Owner::Lent(lent) => {
            let outstanding = lent.outstanding();
            let waited = Instant::now();
            lent.close().await?;
            Some((waited.elapsed(), outstanding))
        }
        Owner::Plain(dma) => {
            dma.close().await?;
            None
        }
    };
    if let Some(error) = other_errors.into_inner().first() {
        return Err(format!("hand-off failed: {error}").into());
    }
    let mut end_to_end_ns = Vec::new();
    let mut worker_cpu = Duration::ZERO;
    for worker in workers {
        let (latencies, cpu) = worker.join().map_err(|_| "worker panicked")?;
        end_to_end_ns.extend(latencies);
        worker_cpu += cpu;
    }
    let process_cpu = process_cpu() - process_cpu_before;
    live.stop.store(true, Ordering::SeqCst);
    sampler.finish();

    let mut handoff_ns = handoff_ns.into_inner();
    handoff_ns.sort_unstable();
    let mut handle_ns = handle_ns.into_inner();
    handle_ns.sort_unstable();
    end_to_end_ns.sort_unstable();
    Ok(RunResult {
        mode,
        seconds,
        reads: live.reads.load(Ordering::Relaxed),
        handed: live.handed.load(Ordering::Relaxed),
        refused: live.refused.load(Ordering::Relaxed),
        owner_cpu,
        process_cpu,
        peak_fds_in_flight: live.peak_fds.load(Ordering::Relaxed),
        sent_bytes: live.sent_bytes.load(Ordering::Relaxed),
        handoff_ns,
        handle_ns,
        worker_cpu,
        peak_in_flight: live.peak_in_flight.load(Ordering::Relaxed),
        end_to_end_ns,
        read_errors: read_errors.get(),
        close_wait,
    })
}

/// The owner's file: a plain `DmaFile` for the dup run, a lent one for fdlend's.
enum Owner {
    Plain(DmaFile),
    Lent(LentDmaFile),
}

impl Owner {
    fn dma(&self) -> &DmaFile {
        match self {
            Owner::Plain(dma) => dma,
            Owner::Lent(lent) => lent.dma(),
        }
    }
}

/// Awaits every future, concurrently, on the current glommio task.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: Vec<F>) {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for slot in &mut futures {
            if let Some(future) = slot {
                if future.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    pending = true;
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await
}
