//! The timing harness: best-of-rounds samples, each fdlend operation timed
//! alternately with its baseline, on one thread or racing on several.

use std::sync::Barrier;
use std::time::{Duration, Instant};

/// How long to measure: rounds per row, and the time each round fills.
pub struct Settings {
    pub rounds: usize,
    pub sample: Duration,
}

/// The best sample: noise on a shared machine (other processes, preemption) only
/// ever adds time, so the fastest round is the closest to the operation's own cost.
fn best(samples: Vec<f64>) -> f64 {
    samples.into_iter().fold(f64::INFINITY, f64::min)
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// ns per call of `op`, one sample: enough calls to fill `sample` time.
fn sample_ns(sample: Duration, op: &mut dyn FnMut()) -> f64 {
    // Calibrate: double the batch until it takes a tenth of the sample.
    let mut batch = 1u64;
    loop {
        let start = Instant::now();
        for _ in 0..batch {
            op();
        }
        let took = start.elapsed();
        if took >= sample / 10 {
            let calls = (batch as f64 * sample.as_secs_f64() / took.as_secs_f64()) as u64;
            let start = Instant::now();
            for _ in 0..calls.max(1) {
                op();
            }
            return start.elapsed().as_nanos() as f64 / calls.max(1) as f64;
        }
        batch *= 2;
    }
}

/// Best rounds of `fdlend` and `baseline`, timed alternately.
pub fn pair(
    settings: &Settings,
    fdlend: &mut dyn FnMut(),
    baseline: &mut dyn FnMut(),
) -> (f64, f64) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..settings.rounds {
        a.push(sample_ns(settings.sample, fdlend));
        b.push(sample_ns(settings.sample, baseline));
    }
    (best(a), best(b))
}

/// Runs `per_thread` on `threads` threads at once, each calling its op `calls` times
/// after a common start; wall time from the first thread's start to the last one's
/// end, per call. (Per-thread clocks would hide a thread preempted at the start: the
/// two would then run one after the other, uncontended, and each look fast.)
fn contended_sample<F>(threads: usize, calls: u64, round: usize, per_thread: &F) -> f64
where
    F: Fn(usize) -> Box<dyn FnMut() + Send> + Sync,
{
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|index| {
                let mut op = per_thread(round);
                let barrier = &barrier;
                scope.spawn(move || {
                    pin_to_cpu(index);
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..calls {
                        op();
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        let spans: Vec<(Instant, Instant)> =
            handles.into_iter().map(|h| h.join().unwrap()).collect();
        let first = spans.iter().map(|s| s.0).min().unwrap();
        let last = spans.iter().map(|s| s.1).max().unwrap();
        (last - first).as_nanos() as f64 / calls as f64
    })
}

/// Each racing thread on its own CPU, so that (when both run) they really run at once
/// and contend, rather than taking turns on one CPU.
fn pin_to_cpu(index: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: an all-zero `cpu_set_t` is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `index % cpus` is below `CPU_SETSIZE` on any machine this runs on.
    unsafe { libc::CPU_SET(index % cpus, &mut set) };
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed; pid 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if rc != 0 {
        eprintln!(
            "  (could not pin to CPU {index}: {})",
            std::io::Error::last_os_error()
        );
    }
}

/// Median rounds of `fdlend` and `baseline` racing on `threads` threads, alternately;
/// each closure makes one thread's op for the round number it is given (so a case can
/// move its shared count to another address each round).
pub fn contended_pair<A, B>(
    settings: &Settings,
    threads: usize,
    fdlend: &A,
    baseline: &B,
) -> (f64, f64)
where
    A: Fn(usize) -> Box<dyn FnMut() + Send> + Sync,
    B: Fn(usize) -> Box<dyn FnMut() + Send> + Sync,
{
    // Many short rounds, alternating, each on the round's own count (the cases rotate
    // through several files and `Arc`s): what a contended line costs here depends on
    // its address (which cache slice homes it), by up to 1.5x, so one address per
    // side would compare two addresses rather than two codes. The median, not the
    // best, for the same reason: the best round of each side is the luckiest address.
    let calls = (settings.sample.as_nanos() / 4 / 20) as u64;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for round in 0..settings.rounds * 8 {
        a.push(contended_sample(threads, calls, round, fdlend));
        b.push(contended_sample(threads, calls, round, baseline));
    }
    (median(a), median(b))
}
