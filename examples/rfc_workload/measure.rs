//! What a run measures while it runs: shared counters, the `/proc/self/fd` sampler,
//! and CPU time from `getrusage`.

use nix::sys::resource::{getrusage, UsageWho};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Counters shared by the owner, the workers and the sampler.
#[derive(Default)]
pub struct Live {
    pub reads: AtomicU64,
    pub handed: AtomicU64,
    pub returned: AtomicU64,
    pub refused: AtomicU64,
    pub sent_bytes: AtomicU64,
    pub peak_fds: AtomicU64,
    pub peak_in_flight: AtomicU64,
    pub stop: AtomicBool,
}

pub fn count_fds() -> Option<u64> {
    // Under a lowered RLIMIT_NOFILE the listing itself may be refused: skip the sample.
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// This thread's CPU time so far (getrusage `RUSAGE_THREAD`: microsecond values, so
/// one reading is coarse, but the sum of many short intervals is unbiased).
pub fn thread_cpu_ns() -> u64 {
    cpu(UsageWho::RUSAGE_THREAD).map_or(0, |d| d.as_nanos() as u64)
}

/// What one pair of `thread_cpu_ns` readings adds to an interval by itself.
pub fn measurement_cost_ns() -> u64 {
    const PAIRS: u64 = 20_000;
    let mut total = 0;
    for _ in 0..PAIRS {
        let before = thread_cpu_ns();
        total += thread_cpu_ns().saturating_sub(before);
    }
    total / PAIRS
}

pub fn cpu(who: UsageWho) -> nix::Result<Duration> {
    let usage = getrusage(who)?;
    let micros = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    Ok(Duration::from_micros(
        micros(usage.user_time()) + micros(usage.system_time()),
    ))
}

/// Samples `/proc/self/fd` for the peak and prints a progress line once a second.
pub struct Sampler {
    thread: thread::JoinHandle<()>,
}

impl Sampler {
    pub fn start(live: Arc<Live>, baseline: u64, label: String, duration: Duration) -> Sampler {
        let thread = thread::spawn(move || {
            let start = Instant::now();
            let mut last_print = start;
            while !live.stop.load(Ordering::SeqCst) {
                let handed = live.handed.load(Ordering::Relaxed);
                let in_flight = handed.saturating_sub(live.returned.load(Ordering::Relaxed));
                live.peak_in_flight.fetch_max(in_flight, Ordering::Relaxed);
                if let Some(count) = count_fds() {
                    live.peak_fds
                        .fetch_max(count.saturating_sub(baseline), Ordering::Relaxed);
                }
                if last_print.elapsed() >= Duration::from_secs(1) {
                    last_print = Instant::now();
                    let handed = live.handed.load(Ordering::Relaxed);
                    eprint!(
                        "\r  [{label}] {:4.1}/{:.1} s  reads {:8}  hand-offs {:7}  in flight {:5}  refused {:6}   ",
                        start.elapsed().as_secs_f64(),
                        duration.as_secs_f64(),
                        live.reads.load(Ordering::Relaxed),
                        handed,
                        handed - live.returned.load(Ordering::Relaxed),
                        live.refused.load(Ordering::Relaxed),
                    );
                }
                thread::sleep(Duration::from_millis(5));
            }
            eprintln!();
        });
        Sampler { thread }
    }

    /// Waits for the sampler to see `Live::stop` (the caller sets it first).
    pub fn finish(self) {
        let _ = self.thread.join();
    }
}
