//! fdlend against what it replaces, row by row, in the same run: every row times the
//! fdlend operation and its baseline alternately (several rounds, the best of each),
//! so the ratio survives a noisy machine better than either number does.
//!
//! ```text
//! cargo bench --bench lending               # progress on stderr, then the table
//! cargo bench --bench lending -- --table    # the markdown table alone (for README)
//! cargo bench --bench lending -- --quick    # fewer, shorter rounds (a smoke test)
//! ```
//!
//! A counting `#[global_allocator]` measures allocations per loan for the 200k-in-flight
//! rows. The sharded rows use `fdlend::ShardedLender`.

use fdlend::{Lender, Loan, ShardedLender, SharedLoan};
use std::alloc::{GlobalAlloc, Layout, System};
use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Counts live bytes and allocation calls, to report what holding a loan costs.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to `System` unchanged; the counters are side effects.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // Relaxed: tallies read after the measured code has finished on this thread.
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's `GlobalAlloc::alloc` contract, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Relaxed: as in `alloc`.
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's `GlobalAlloc::dealloc` contract, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

struct Settings {
    rounds: usize,
    sample: Duration,
}

/// One line of the table.
struct Row {
    name: String,
    fdlend: String,
    baseline_name: String,
    baseline: String,
    ratio: String,
    target: &'static str,
    met: &'static str,
}

fn row(name: &str, fdlend_ns: f64, baseline_name: &str, baseline_ns: f64, target: Target) -> Row {
    let ratio = fdlend_ns / baseline_ns;
    let met = match target {
        Target::None => "",
        Target::AtMost(limit) if ratio <= limit => "yes",
        Target::AtMost(_) => "**no**",
    };
    eprintln!("  {name}: {fdlend_ns:.1} ns vs {baseline_name} {baseline_ns:.1} ns = {ratio:.3}x");
    Row {
        name: name.to_owned(),
        fdlend: format!("{fdlend_ns:.1}"),
        baseline_name: baseline_name.to_owned(),
        baseline: format!("{baseline_ns:.1}"),
        ratio: format!("{ratio:.3}"),
        target: target.text(),
        met,
    }
}

#[derive(Clone, Copy)]
enum Target {
    None,
    AtMost(f64),
}

impl Target {
    fn text(self) -> &'static str {
        match self {
            Target::None => "",
            Target::AtMost(l) if l <= 0.011 => "≤ 0.01 (100× cheaper)",
            Target::AtMost(l) if l <= 0.51 => "≤ 0.5",
            Target::AtMost(l) if l <= 1.01 => "≤ 1.0",
            Target::AtMost(_) => "≤ 1.5",
        }
    }
}

/// The best sample: noise on a shared machine (other processes, preemption) only
/// ever adds time, so the fastest round is the closest to the operation's own cost.
fn best(samples: Vec<f64>) -> f64 {
    samples.into_iter().fold(f64::INFINITY, f64::min)
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
fn pair(settings: &Settings, fdlend: &mut dyn FnMut(), baseline: &mut dyn FnMut()) -> (f64, f64) {
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
fn contended_sample<F>(threads: usize, calls: u64, per_thread: &F) -> f64
where
    F: Fn() -> Box<dyn FnMut() + Send> + Sync,
{
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|index| {
                let mut op = per_thread();
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

fn contended_pair<A, B>(settings: &Settings, threads: usize, fdlend: &A, baseline: &B) -> (f64, f64)
where
    A: Fn() -> Box<dyn FnMut() + Send> + Sync,
    B: Fn() -> Box<dyn FnMut() + Send> + Sync,
{
    // Many short rounds: on a shared machine a short window with both CPUs free is
    // far likelier than a long one, and the best round is the one that counts.
    let calls = (settings.sample.as_nanos() / 4 / 20) as u64;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..settings.rounds * 4 {
        a.push(contended_sample(threads, calls, fdlend));
        b.push(contended_sample(threads, calls, baseline));
    }
    (best(a), best(b))
}

fn memfd(len: usize) -> File {
    let fd = nix::sys::memfd::memfd_create("fdlend-bench", nix::sys::memfd::MFdFlags::empty())
        .expect("memfd_create");
    let mut file = File::from(fd);
    let block: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    file.write_all(&block).unwrap();
    file
}

/// The classic hand-off: a new kernel fd, closed by the receiver.
fn dup_close(fd: &impl AsRawFd) {
    // SAFETY: dup of an fd this process holds open; the result is owned below.
    let copy = unsafe { libc::dup(fd.as_raw_fd()) };
    assert!(copy >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: `copy` is a fresh fd nothing else owns.
    drop(black_box(unsafe { OwnedFd::from_raw_fd(copy) }));
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let table_only = args.iter().any(|a| a == "--table");
    let quick = args.iter().any(|a| a == "--quick");
    let settings = if quick {
        Settings {
            rounds: 3,
            sample: Duration::from_millis(5),
        }
    } else {
        Settings {
            rounds: 9,
            sample: Duration::from_millis(30),
        }
    };
    let started = Instant::now();
    let mut rows = Vec::new();

    let file = memfd(1 << 20);
    let arc = Arc::new(OwnedFd::from(file.try_clone().unwrap()));
    let lender = Lender::try_from(file).unwrap();

    eprintln!("hand-off: lend + release vs dup + close");
    let (a, b) = pair(
        &settings,
        &mut || drop(black_box(lender.loan().unwrap())),
        &mut || dup_close(&lender),
    );
    rows.push(row(
        "`loan()` + drop",
        a,
        "`dup` + `close`",
        b,
        Target::AtMost(0.01),
    ));
    let (a, b) = pair(
        &settings,
        &mut || {
            // SAFETY: the token is returned at once and not used after.
            let token = black_box(unsafe { lender.lend_fd() }.unwrap());
            // SAFETY: returned exactly once; the lender is alive, so never `close_now`ed.
            unsafe { fdlend::return_fd(token) }.unwrap();
        },
        &mut || dup_close(&lender),
    );
    rows.push(row(
        "`lend_fd` + `return_fd`",
        a,
        "`dup` + `close`",
        b,
        Target::AtMost(0.01),
    ));
    let (a, b) = pair(
        &settings,
        &mut || drop(black_box(lender.local_loan())),
        &mut || dup_close(&lender),
    );
    rows.push(row(
        "`local_loan()` + drop (same thread)",
        a,
        "`dup` + `close`",
        b,
        Target::AtMost(0.01),
    ));

    eprintln!("clone + drop, uncontended");
    let loan = lender.loan().unwrap();
    let (a, b) = pair(
        &settings,
        &mut || drop(black_box(black_box(&loan).clone())),
        &mut || drop(black_box(Arc::clone(black_box(&arc)))),
    );
    rows.push(row(
        "`Loan` clone + drop",
        a,
        "`Arc<OwnedFd>`",
        b,
        Target::AtMost(1.0),
    ));

    let local = lender.local_loan();
    let rc = Rc::new(lender.as_fd().try_clone_to_owned().unwrap());
    let (a, b) = pair(
        &settings,
        &mut || drop(black_box(black_box(&local).clone())),
        &mut || drop(black_box(Rc::clone(black_box(&rc)))),
    );
    rows.push(row(
        "`LocalLoan` clone + drop",
        a,
        "`Rc<OwnedFd>`",
        b,
        Target::AtMost(1.5),
    ));
    drop(rc);

    let ticket = lender.ticket();
    let weak = Arc::downgrade(&arc);
    let (a, b) = pair(
        &settings,
        &mut || drop(black_box(black_box(&ticket).pin().unwrap())),
        &mut || drop(black_box(black_box(&weak).upgrade().unwrap())),
    );
    rows.push(row(
        "`Ticket::pin` + drop",
        a,
        "`Weak::upgrade` + drop",
        b,
        Target::None,
    ));

    eprintln!("2 threads, one file");
    let sharded = ShardedLender::new(lender.as_fd().try_clone_to_owned().unwrap()).unwrap();
    let shared = sharded.loan();
    let loan_op = || -> Box<dyn FnMut() + Send> {
        let mine: Loan = loan.clone();
        Box::new(move || drop(black_box(black_box(&mine).clone())))
    };
    let arc_op = || -> Box<dyn FnMut() + Send> {
        let mine = Arc::clone(&arc);
        Box::new(move || drop(black_box(Arc::clone(black_box(&mine)))))
    };
    let shared_op = || -> Box<dyn FnMut() + Send> {
        let mine: SharedLoan = shared.clone();
        Box::new(move || drop(black_box(black_box(&mine).clone())))
    };
    let (a, b) = contended_pair(&settings, 2, &loan_op, &arc_op);
    rows.push(row(
        "`Loan` clone + drop, 2 threads",
        a,
        "`Arc`, 2 threads",
        b,
        Target::None,
    ));
    let (a, b) = contended_pair(&settings, 2, &shared_op, &arc_op);
    rows.push(row(
        "`SharedLoan` clone + drop, 2 threads",
        a,
        "`Arc`, 2 threads",
        b,
        Target::AtMost(0.5),
    ));
    let (a, b) = pair(
        &settings,
        &mut || drop(black_box(black_box(&shared).clone())),
        &mut || drop(black_box(Arc::clone(black_box(&arc)))),
    );
    rows.push(row(
        "`SharedLoan` clone + drop, 1 thread",
        a,
        "`Arc<OwnedFd>`",
        b,
        Target::None,
    ));

    eprintln!("end-to-end hand-off: 4 KiB pread at a moving offset");
    let (mut buf, mut buf2) = ([0u8; 4096], [0u8; 4096]);
    let mut offset = 0i64;
    let mut next = move || {
        offset = (offset + 4096) % (1 << 20);
        offset
    };
    let mut next2 = next;
    let (a, b) = pair(
        &settings,
        &mut || {
            let loan = lender.loan().unwrap();
            let n = nix::sys::uio::pread(&loan, black_box(&mut buf), next()).unwrap();
            black_box(n);
        },
        &mut || {
            // SAFETY: dup of an fd this process holds open; owned below.
            let copy = unsafe { OwnedFd::from_raw_fd(libc::dup(lender.as_raw_fd())) };
            let n = nix::sys::uio::pread(&copy, black_box(&mut buf2), next2()).unwrap();
            black_box(n);
        },
    );
    rows.push(row(
        "`loan` + 4 KiB `pread` + drop",
        a,
        "`dup` + `pread` + `close`",
        b,
        Target::None,
    ));

    eprintln!("200k loans in flight");
    let mut memory = Vec::new();
    let in_flight = 200_000usize;
    memory.push(in_flight_cost("`Loan` (`loan()`)", in_flight, || {
        lender.loan().unwrap()
    }));
    memory.push(in_flight_cost("`SharedLoan` (`clone`)", in_flight, || {
        shared.clone()
    }));
    memory.push(in_flight_cost(
        "`Arc<OwnedFd>` (`clone`)",
        in_flight,
        || Arc::clone(&arc),
    ));
    memory.push(dup_in_flight(&lender, in_flight));

    drop((loan, local, shared, sharded, arc, weak));
    lender.close_wait().unwrap();

    print_table(&rows, &memory, &settings, started.elapsed(), table_only);
}

struct Memory {
    name: String,
    held: usize,
    bytes_per: f64,
    allocs_per: f64,
    fds_per: f64,
    ns_per: f64,
    note: String,
}

fn in_flight_cost<T>(name: &str, count: usize, make: impl Fn() -> T) -> Memory {
    let fds = open_fds();
    // Relaxed: tallies of this thread's own allocations (the bench is single-threaded here).
    let (bytes, allocs) = (
        ALLOCATED.load(Ordering::Relaxed),
        ALLOCATIONS.load(Ordering::Relaxed),
    );
    let start = Instant::now();
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        held.push(make());
    }
    let took = start.elapsed();
    let bytes = ALLOCATED.load(Ordering::Relaxed) - bytes;
    let allocs = ALLOCATIONS.load(Ordering::Relaxed) - allocs;
    let fds_used = open_fds().saturating_sub(fds);
    black_box(&held);
    drop(held);
    let memory = Memory {
        name: name.to_owned(),
        held: count,
        bytes_per: bytes as f64 / count as f64,
        allocs_per: allocs as f64 / count as f64,
        fds_per: fds_used as f64 / count as f64,
        ns_per: took.as_nanos() as f64 / count as f64,
        // The one allocation is the `Vec` holding them.
        note: if allocs <= 1 {
            format!(
                "no allocation: the {} B `Vec` slot is all",
                std::mem::size_of::<T>()
            )
        } else {
            String::new()
        },
    };
    eprintln!(
        "  {}: {:.1} B, {:.4} allocs, {:.4} fds, {:.1} ns per handle",
        memory.name, memory.bytes_per, memory.allocs_per, memory.fds_per, memory.ns_per
    );
    memory
}

/// `dup` until 200k are held or the fd limit refuses; reports how far it got.
fn dup_in_flight(fd: &impl AsRawFd, wanted: usize) -> Memory {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    let fds = open_fds();
    // Relaxed: as in `in_flight_cost`.
    let (bytes, allocs) = (
        ALLOCATED.load(Ordering::Relaxed),
        ALLOCATIONS.load(Ordering::Relaxed),
    );
    let start = Instant::now();
    // Stop short of the limit: counting `/proc/self/fd` needs an fd itself.
    let room = (limit as usize).saturating_sub(fds + 64);
    let mut held: Vec<OwnedFd> = Vec::with_capacity(wanted.min(room));
    let mut refused = None;
    for _ in 0..wanted.min(room) {
        // SAFETY: dup of an fd this process holds open; owned below.
        let copy = unsafe { libc::dup(fd.as_raw_fd()) };
        if copy < 0 {
            refused = Some(std::io::Error::last_os_error());
            break;
        }
        // SAFETY: `copy` is a fresh fd nothing else owns.
        held.push(unsafe { OwnedFd::from_raw_fd(copy) });
    }
    let took = start.elapsed();
    let bytes = ALLOCATED.load(Ordering::Relaxed) - bytes;
    let allocs = ALLOCATIONS.load(Ordering::Relaxed) - allocs;
    let fds_used = open_fds().saturating_sub(fds);
    let count = held.len().max(1);
    drop(held);
    let note = match refused {
        Some(error) => format!("refused after {count}: {error}"),
        None if count < wanted => {
            format!("**{wanted} cannot be held here**: `ulimit -n` is {limit}; measured at {count}")
        }
        None => "one kernel fd each".to_owned(),
    };
    let memory = Memory {
        name: "`dup()` per hand-off".to_owned(),
        held: count,
        bytes_per: bytes as f64 / count as f64,
        allocs_per: allocs as f64 / count as f64,
        fds_per: fds_used as f64 / count as f64,
        ns_per: took.as_nanos() as f64 / count as f64,
        note,
    };
    eprintln!(
        "  {}: {} held, {:.1} B, {:.4} allocs, {:.4} fds, {:.1} ns per handle ({})",
        memory.name,
        memory.held,
        memory.bytes_per,
        memory.allocs_per,
        memory.fds_per,
        memory.ns_per,
        memory.note
    );
    memory
}

fn machine() -> String {
    let model = std::process::Command::new("lscpu")
        .output()
        .ok()
        .and_then(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.starts_with("Model name:"))
                .map(|l| l["Model name:".len()..].trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!("{model}, {cpus} CPUs, Linux {}", kernel.trim())
}

fn print_table(
    rows: &[Row],
    memory: &[Memory],
    settings: &Settings,
    took: Duration,
    table_only: bool,
) {
    if !table_only {
        println!();
    }
    println!(
        "Measured on {} — best of {} alternating rounds of {} ms each (2-thread rows: first start to last end, per call of each thread).",
        machine(),
        settings.rounds,
        settings.sample.as_millis()
    );
    println!();
    println!("| operation | fdlend ns | baseline | baseline ns | ratio | target | met |");
    println!("|---|---:|---|---:|---:|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.name, r.fdlend, r.baseline_name, r.baseline, r.ratio, r.target, r.met
        );
    }
    println!();
    println!("| 200k handles in flight | held | heap B / handle | allocs / handle | kernel fds / handle | ns / handle | note |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for m in memory {
        println!(
            "| {} | {} | {:.1} | {:.4} | {:.4} | {:.1} | {} |",
            m.name, m.held, m.bytes_per, m.allocs_per, m.fds_per, m.ns_per, m.note
        );
    }
    if !table_only {
        println!();
        println!("(whole run: {:.1} s)", took.as_secs_f64());
    }
}
