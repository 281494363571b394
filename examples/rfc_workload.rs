//! The RFC workload on this machine: a glommio executor serves a stream of `O_DIRECT`
//! reads of a real on-disk file and hands a fraction of them (a byte range of the
//! file) to a pool of std threads, which hold each hand-off for a while (queueing,
//! then reading the range, as a slow client's transfer would) before letting go.
//!
//! It runs the same request stream twice in one process, handing off with a `dup()`
//! per hand-off and then with fdlend loans of the one fd (`LentDmaFile`), and prints
//! one table side by side; then again with `RLIMIT_NOFILE` lowered, where `dup()`
//! meets `EMFILE` and loans do not.
//!
//! ```text
//! cargo run --release --features glommio --example rfc_workload -- --help
//! ```

use fdlend::glommio::LentDmaFile;
use fdlend::Loan;
use glommio::io::DmaFile;
use glommio::{LocalExecutorBuilder, Placement};
use nix::errno::Errno;
use nix::sys::resource::{getrlimit, getrusage, setrlimit, Resource, UsageWho};
use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

const BLOCK: usize = 4096;
const USAGE: &str = "\
rfc_workload: dup() per hand-off vs fdlend loans, on a glommio executor

  --rate N          reads/s the executor serves (default 20000)
  --fraction F      share of reads handed to the pool (default 0.1)
  --duration S      seconds per mode, run as two halves (default 4; fd-limit runs: half)
  --threads N       worker threads (default 4)
  --hold-ms N       how long a worker holds each hand-off (default 200)
  --region BYTES    bytes a worker reads per hand-off (default 16384)
  --fd-limit N      RLIMIT_NOFILE for the limit runs, 0 to skip (default 256)
  --sendfile        workers also sendfile the range to a loopback socket
  --dir PATH        where to put the data file (must not be tmpfs)
  --file-mib N      data file size in MiB (default 64)";

#[derive(Clone, Debug)]
struct Config {
    rate: f64,
    fraction: f64,
    duration: Duration,
    threads: usize,
    hold: Duration,
    region: usize,
    fd_limit: u64,
    sendfile: bool,
    dir: Option<PathBuf>,
    file_mib: usize,
}

fn parse_args() -> Result<Config, String> {
    let mut config = Config {
        rate: 20_000.0,
        fraction: 0.1,
        duration: Duration::from_secs(4),
        threads: 4,
        hold: Duration::from_millis(200),
        region: 16 << 10,
        fd_limit: 256,
        sendfile: false,
        dir: None,
        file_mib: 64,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--rate" => config.rate = value()?.parse().map_err(|e| bad(&e))?,
            "--fraction" => config.fraction = value()?.parse().map_err(|e| bad(&e))?,
            "--duration" => {
                config.duration = Duration::from_secs_f64(value()?.parse().map_err(|e| bad(&e))?)
            }
            "--threads" => config.threads = value()?.parse().map_err(|e| bad(&e))?,
            "--hold-ms" => {
                config.hold = Duration::from_millis(value()?.parse().map_err(|e| bad(&e))?)
            }
            "--region" => config.region = value()?.parse().map_err(|e| bad(&e))?,
            "--fd-limit" => config.fd_limit = value()?.parse().map_err(|e| bad(&e))?,
            "--sendfile" => config.sendfile = true,
            "--dir" => config.dir = Some(value()?.into()),
            "--file-mib" => config.file_mib = value()?.parse().map_err(|e| bad(&e))?,
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown flag {other}\n\n{USAGE}")),
        }
    }
    let region_ok = config.region >= BLOCK && config.region % BLOCK == 0;
    if !region_ok || config.region > config.file_mib << 20 {
        return Err("--region must be a multiple of 4096 within the file".into());
    }
    if config.threads == 0 || config.rate <= 0.0 || !(0.0..=1.0).contains(&config.fraction) {
        return Err("need --threads > 0, --rate > 0, 0 <= --fraction <= 1".into());
    }
    Ok(config)
}

/// A directory on a real disk: `O_DIRECT` needs one, and tmpfs refuses it.
fn data_dir(config: &Config) -> Result<PathBuf, String> {
    let candidates = match &config.dir {
        Some(dir) => vec![dir.clone()],
        None => vec![std::env::temp_dir(), "/var/tmp".into(), ".".into()],
    };
    for dir in candidates {
        match nix::sys::statfs::statfs(&dir) {
            Ok(fs) if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC => return Ok(dir),
            _ => continue,
        }
    }
    Err("no directory on a real disk (tmpfs refuses O_DIRECT); pass --dir".into())
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Dup,
    Lend,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Dup => "dup()",
            Mode::Lend => "fdlend",
        }
    }
}

/// What a worker gets: the fd (as a dup or a loan) and the range to read.
enum Handle {
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

struct HandOff {
    handle: Handle,
    offset: u64,
    decided: Instant,
}

/// Counters shared by the owner, the workers and the sampler.
#[derive(Default)]
struct Live {
    reads: AtomicU64,
    handed: AtomicU64,
    returned: AtomicU64,
    refused: AtomicU64,
    sent_bytes: AtomicU64,
    peak_fds: AtomicU64,
    peak_in_flight: AtomicU64,
    stop: AtomicBool,
}

struct RunResult {
    mode: Mode,
    seconds: f64,
    reads: u64,
    handed: u64,
    refused: u64,
    owner_cpu: Duration,
    process_cpu: Duration,
    peak_fds_in_flight: u64,
    sent_bytes: u64,
    handoff_ns: Vec<u64>,
    handle_ns: Vec<u64>,
    handoff_cpu: Duration,
    peak_in_flight: u64,
    end_to_end_ns: Vec<u64>,
    read_errors: u64,
    close_wait: Option<(Duration, usize)>,
}

impl RunResult {
    /// Folds another run of the same mode into this one.
    fn absorb(&mut self, other: RunResult) {
        debug_assert_eq!(self.mode, other.mode);
        self.seconds += other.seconds;
        self.reads += other.reads;
        self.handed += other.handed;
        self.refused += other.refused;
        self.owner_cpu += other.owner_cpu;
        self.process_cpu += other.process_cpu;
        self.handoff_cpu += other.handoff_cpu;
        self.peak_fds_in_flight = self.peak_fds_in_flight.max(other.peak_fds_in_flight);
        self.peak_in_flight = self.peak_in_flight.max(other.peak_in_flight);
        for (mine, theirs) in [
            (&mut self.handoff_ns, other.handoff_ns),
            (&mut self.handle_ns, other.handle_ns),
            (&mut self.end_to_end_ns, other.end_to_end_ns),
        ] {
            mine.extend(theirs);
            mine.sort_unstable();
        }
        self.read_errors += other.read_errors;
        self.sent_bytes += other.sent_bytes;
        self.close_wait = self.close_wait.max(other.close_wait);
    }
}

fn main() {
    let config = match parse_args() {
        Ok(config) => config,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(if message == USAGE { 0 } else { 2 });
        }
    };
    if let Err(error) = run_all(&config) {
        eprintln!("rfc_workload: {error}");
        std::process::exit(1);
    }
}

fn run_all(config: &Config) -> Result<(), Box<dyn std::error::Error>> {
    let dir = data_dir(config)?;
    let path = dir.join(format!("fdlend-rfc-workload-{}.dat", std::process::id()));
    let started = Instant::now();
    write_data_file(&path, config.file_mib)?;
    eprintln!(
        "data file {} ({} MiB) written in {:.1} s; rate {}/s, {}% handed to {} threads, held {} ms",
        path.display(),
        config.file_mib,
        started.elapsed().as_secs_f64(),
        config.rate,
        config.fraction * 100.0,
        config.threads,
        config.hold.as_millis()
    );
    let sink = config.sendfile.then(Sink::start).transpose()?;
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(2 << 20)
        .make()?;
    let result = executor.run(async {
        // A short unreported run first (page cache, DMA arena, thread stacks), then
        // each mode in two halves, ABBA, so drift in a shared machine's load cancels.
        let warm_up = Duration::from_millis(500).min(config.duration);
        run_one(config, &path, Mode::Lend, warm_up, sink.as_ref()).await?;
        let half = config.duration / 2;
        let mut dup = run_one(config, &path, Mode::Dup, half, sink.as_ref()).await?;
        let mut lend = run_one(config, &path, Mode::Lend, half, sink.as_ref()).await?;
        lend.absorb(run_one(config, &path, Mode::Lend, half, sink.as_ref()).await?);
        dup.absorb(run_one(config, &path, Mode::Dup, half, sink.as_ref()).await?);
        let full = vec![dup, lend];
        let mut limited = Vec::new();
        if config.fd_limit > 0 {
            let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
            setrlimit(Resource::RLIMIT_NOFILE, config.fd_limit, hard)?;
            for mode in [Mode::Dup, Mode::Lend] {
                let half = config.duration / 2;
                let run = run_one(config, &path, mode, half, sink.as_ref()).await;
                limited.push(run);
            }
            setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?;
        }
        let limited = limited.into_iter().collect::<Result<Vec<_>, _>>()?;
        let rings = glommio::executor().io_stats();
        eprintln!(
            "glommio served its reads on the {} ring (poll ring reads {}, main ring reads {})",
            if rings.poll_ring.file_reads().0 > 0 {
                "poll"
            } else {
                "main"
            },
            rings.poll_ring.file_reads().0,
            rings.main_ring.file_reads().0
        );
        Ok::<_, Box<dyn std::error::Error>>((full, limited))
    });
    let _ = std::fs::remove_file(&path);
    let (full, limited) = result?;
    print_table(config, &full, &limited);
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn write_data_file(path: &Path, mib: usize) -> std::io::Result<()> {
    let mut file = std::fs::File::create(path)?;
    let mut chunk = vec![0u8; 1 << 20];
    for mib_index in 0..mib {
        for (i, byte) in chunk.iter_mut().enumerate() {
            *byte = (mix((mib_index << 20 | i) as u64 / 8) >> 7) as u8;
        }
        file.write_all(&chunk)?;
    }
    file.sync_all()
}

/// splitmix64: the request stream's randomness, the same for both modes.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

async fn run_one(
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

    let owner_cpu_before = cpu(UsageWho::RUSAGE_THREAD)?;
    let process_cpu_before = cpu(UsageWho::RUSAGE_SELF)?;
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
    let handoff_cpu_ns = Cell::new(0u64);
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
            let cpu_before = thread_cpu_ns();
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
            handoff_cpu_ns.set(handoff_cpu_ns.get() + thread_cpu_ns().saturating_sub(cpu_before));
        }
    };
    let tasks: Vec<_> = (0..32).map(|_| serve()).collect();
    futures_join_all(tasks).await;
    let seconds = start.elapsed().as_secs_f64();
    let owner_cpu = cpu(UsageWho::RUSAGE_THREAD)? - owner_cpu_before;

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
    for worker in workers {
        end_to_end_ns.extend(worker.join().map_err(|_| "worker panicked")?);
    }
    let process_cpu = cpu(UsageWho::RUSAGE_SELF)? - process_cpu_before;
    live.stop.store(true, Ordering::SeqCst);
    sampler.finish();

    let mut handoff_ns = handoff_ns.into_inner();
    handoff_ns.sort_unstable();
    let mut handle_ns = handle_ns.into_inner();
    handle_ns.sort_unstable();
    let measuring = measurement_cost_ns() * handoff_ns.len() as u64;
    let handoff_cpu = Duration::from_nanos(handoff_cpu_ns.get().saturating_sub(measuring));
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
        handoff_cpu,
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

type Workers = (
    Vec<mpsc::Sender<HandOff>>,
    Vec<thread::JoinHandle<Vec<u64>>>,
);

/// Each worker takes hand-offs in order, reads the first block at once, holds the
/// hand-off for `hold` (a slow client), then reads (or sends) the whole range and
/// lets go of the fd.
fn start_workers(
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
            let mut held: std::collections::VecDeque<(Instant, HandOff)> = Default::default();
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
            latencies
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
struct Sink {
    address: std::net::SocketAddr,
}

impl Sink {
    fn start() -> std::io::Result<Sink> {
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

fn count_fds() -> Option<u64> {
    // Under a lowered RLIMIT_NOFILE the listing itself may be refused: skip the sample.
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// This thread's CPU time so far (getrusage `RUSAGE_THREAD`: microsecond values, so
/// one reading is coarse, but the sum of many short intervals is unbiased).
fn thread_cpu_ns() -> u64 {
    cpu(UsageWho::RUSAGE_THREAD).map_or(0, |d| d.as_nanos() as u64)
}

/// What one pair of `thread_cpu_ns` readings adds to an interval by itself.
fn measurement_cost_ns() -> u64 {
    const PAIRS: u64 = 20_000;
    let mut total = 0;
    for _ in 0..PAIRS {
        let before = thread_cpu_ns();
        total += thread_cpu_ns().saturating_sub(before);
    }
    total / PAIRS
}

fn cpu(who: UsageWho) -> nix::Result<Duration> {
    let usage = getrusage(who)?;
    let micros = |t: nix::sys::time::TimeVal| t.tv_sec() as u64 * 1_000_000 + t.tv_usec() as u64;
    Ok(Duration::from_micros(
        micros(usage.user_time()) + micros(usage.system_time()),
    ))
}

/// Samples `/proc/self/fd` for the peak and prints a progress line once a second.
struct Sampler {
    thread: thread::JoinHandle<()>,
}

impl Sampler {
    fn start(live: Arc<Live>, baseline: u64, label: String, duration: Duration) -> Sampler {
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

    fn finish(self) {
        let _ = self.thread.join();
    }
}

fn percentile(sorted: &[u64], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    human_ns(sorted[index] as f64)
}

fn human_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn print_table(config: &Config, full: &[RunResult], limited: &[RunResult]) {
    let row = |name: &str, cells: Vec<String>| {
        print!("{name:<38}");
        for cell in cells {
            print!("{cell:>22}");
        }
        println!();
    };
    println!();
    println!(
        "RFC workload: {} reads/s target, {}% handed off to {} threads, each held {} ms{}",
        config.rate,
        config.fraction * 100.0,
        config.threads,
        config.hold.as_millis(),
        if config.sendfile {
            ", sendfile to loopback"
        } else {
            ""
        }
    );
    row(
        "",
        full.iter()
            .map(|r| format!("{} per hand-off", r.mode.name()))
            .collect(),
    );
    let per = |r: &RunResult, d: Duration| human_ns(d.as_nanos() as f64 / r.handed.max(1) as f64);
    row(
        "reads served /s",
        full.iter()
            .map(|r| format!("{:.0}", r.reads as f64 / r.seconds))
            .collect(),
    );
    row(
        "hand-offs /s",
        full.iter()
            .map(|r| format!("{:.0}", r.handed as f64 / r.seconds))
            .collect(),
    );
    row(
        "dup() / loan() alone p50 / p99",
        full.iter()
            .map(|r| {
                format!(
                    "{} / {}",
                    percentile(&r.handle_ns, 0.5),
                    percentile(&r.handle_ns, 0.99)
                )
            })
            .collect(),
    );
    row(
        "hand-off latency p50 / p99 (+queue)",
        full.iter()
            .map(|r| {
                format!(
                    "{} / {}",
                    percentile(&r.handoff_ns, 0.5),
                    percentile(&r.handoff_ns, 0.99)
                )
            })
            .collect(),
    );
    row(
        "owner-thread CPU per hand-off",
        full.iter().map(|r| per(r, r.handoff_cpu)).collect(),
    );
    row(
        "owner-thread CPU, whole run",
        full.iter()
            .map(|r| format!("{:.0} ms", r.owner_cpu.as_secs_f64() * 1e3))
            .collect(),
    );
    row(
        "process CPU, whole run",
        full.iter()
            .map(|r| format!("{:.0} ms", r.process_cpu.as_secs_f64() * 1e3))
            .collect(),
    );
    row(
        "peak hand-offs in flight",
        full.iter().map(|r| r.peak_in_flight.to_string()).collect(),
    );
    row(
        "peak fds in flight (/proc/self/fd)",
        full.iter()
            .map(|r| r.peak_fds_in_flight.to_string())
            .collect(),
    );
    row(
        "decision to release p50 / p99",
        full.iter()
            .map(|r| {
                format!(
                    "{} / {}",
                    percentile(&r.end_to_end_ns, 0.5),
                    percentile(&r.end_to_end_ns, 0.99)
                )
            })
            .collect(),
    );
    row(
        "owner close waited for",
        full.iter()
            .map(|r| match r.close_wait {
                Some((waited, loans)) => {
                    format!("{loans} loans, {}", human_ns(waited.as_nanos() as f64))
                }
                None => "n/a (dups)".into(),
            })
            .collect(),
    );
    if config.sendfile {
        row(
            "sendfile to loopback",
            full.iter()
                .map(|r| format!("{:.1} MiB", r.sent_bytes as f64 / (1 << 20) as f64))
                .collect(),
        );
    }
    if !limited.is_empty() {
        let limit = config.fd_limit;
        row(
            &format!("RLIMIT_NOFILE={limit}: hand-offs done"),
            limited.iter().map(|r| r.handed.to_string()).collect(),
        );
        row(
            &format!("RLIMIT_NOFILE={limit}: refused (EMFILE)"),
            limited.iter().map(|r| r.refused.to_string()).collect(),
        );
        row(
            &format!("RLIMIT_NOFILE={limit}: peak fds in flight"),
            limited
                .iter()
                .map(|r| r.peak_fds_in_flight.to_string())
                .collect(),
        );
    }
    println!(
        "(owner rows cover deciding, dup()/loan(), and queueing to a worker, whose wake-up \
         dominates; the 'alone' row is the primitive itself. CPU rows are noisy on a \
         shared machine.)"
    );
    let errors: u64 = full.iter().chain(limited).map(|r| r.read_errors).sum();
    if errors > 0 {
        println!("(owner read errors: {errors})");
    }
}
