//! What a glommio run measures while it runs: shared counters and the
//! `/proc/self/fd` sampler. (CPU time: `cpu_clock.rs`.)

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
