//! Fixed-file reads against plain-fd reads of page-cached 4 KiB regions, side by
//! side on one worker ring in the same run: each round times one batch loop of each
//! (alternating, best of the rounds), as ops per second and thread CPU per op
//! (`CLOCK_THREAD_CPUTIME_ID`, which counts the kernel's submit-side work too).
//!
//! ```text
//! cargo bench --bench uring               # progress on stderr, then the table
//! cargo bench --bench uring -- --quick    # fewer, shorter rounds (a smoke test)
//! ```
//!
//! Both loops keep `DEPTH` reads in flight with recycled buffers (and, for plain
//! reads, recycled regions: a `ReadDone` hands its region back), so the only
//! difference is how the SQE names the file: `types::Fd` (the kernel looks the fd
//! up and takes a file reference per op) or `types::Fixed` (the ring's table).

use fdlend::io::uring::{FixedFile, Ring};
use fdlend::io::LentRegion;
use fdlend::Lender;
use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

const DEPTH: u64 = 32;
const REGION: u64 = 4096;
const FILE_PAGES: u64 = 256;

/// A 1 MiB file on the real disk, read once so its pages are cached.
fn cached_file() -> (File, std::path::PathBuf) {
    let path = std::env::temp_dir().join(format!("fdlend-uring-bench-{}", std::process::id()));
    let mut file = File::create(&path).unwrap();
    let bytes: Vec<u8> = (0..FILE_PAGES * REGION)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    file.write_all(&bytes).unwrap();
    drop(file);
    let file = File::open(&path).unwrap();
    let mut warm = Vec::new();
    std::io::Read::read_to_end(&mut &file, &mut warm).unwrap();
    (file, path)
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into a local we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// One measured run: ops, wall time, thread CPU time.
#[derive(Clone, Copy)]
struct Sample {
    ops: u64,
    wall: Duration,
    cpu: Duration,
}

impl Sample {
    fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.wall.as_secs_f64()
    }
    fn cpu_ns_per_op(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.ops as f64
    }
}

fn timed(budget: Duration, mut batch: impl FnMut(u64) -> u64) -> Sample {
    let (start, cpu) = (Instant::now(), thread_cpu());
    let mut ops = 0;
    let mut round = 0;
    while start.elapsed() < budget {
        ops += batch(round);
        round += 1;
    }
    Sample {
        ops,
        wall: start.elapsed(),
        cpu: thread_cpu() - cpu,
    }
}

fn reap_batch(ring: &mut Ring) {
    while ring.in_flight() > 0 {
        ring.submit_and_wait(ring.in_flight()).unwrap();
        ring.reap(|cqe| panic!("no foreign ops: {cqe:?}"));
    }
}

/// `DEPTH` plain reads per batch, regions and buffers recycled.
fn plain_batch(ring: &mut Ring, slots: &mut [Option<(LentRegion, Vec<u8>)>]) -> u64 {
    let ops: Vec<_> = slots
        .iter_mut()
        .map(|slot| {
            let (region, buf) = slot.take().unwrap();
            ring.read(region, buf).unwrap()
        })
        .collect();
    reap_batch(ring);
    for (slot, op) in slots.iter_mut().zip(ops) {
        let done = op.finish().unwrap();
        assert_eq!(done.result, Ok(REGION as usize));
        *slot = Some((done.region, done.buf));
    }
    DEPTH
}

/// `DEPTH` fixed-file reads per batch at the same offsets, buffers recycled.
fn fixed_batch(ring: &mut Ring, file: &FixedFile, bufs: &mut [Option<Vec<u8>>]) -> u64 {
    let ops: Vec<_> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, buf)| {
            let offset = i as u64 * REGION * (FILE_PAGES / DEPTH);
            ring.read_fixed(file, offset, buf.take().unwrap()).unwrap()
        })
        .collect();
    reap_batch(ring);
    for (buf, op) in bufs.iter_mut().zip(ops) {
        let done = op.finish().unwrap();
        assert_eq!(done.result, Ok(REGION as usize));
        *buf = Some(done.buf);
    }
    DEPTH
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, budget) = if quick {
        (3, Duration::from_millis(50))
    } else {
        (9, Duration::from_millis(300))
    };
    let (file, path) = cached_file();
    let lender = Lender::try_from(file).unwrap();
    let loans: Vec<_> = (0..=DEPTH).map(|_| lender.loan().unwrap()).collect();

    let worker = std::thread::spawn(move || {
        let mut loans = loans;
        let mut ring = Ring::new(DEPTH as u32 * 2).unwrap();
        let fixed = ring.register(loans.pop().unwrap()).unwrap();
        let mut plain: Vec<_> = loans
            .into_iter()
            .enumerate()
            .map(|(i, loan)| {
                let offset = i as u64 * REGION * (FILE_PAGES / DEPTH);
                Some((
                    LentRegion::new(loan, offset, REGION).unwrap(),
                    vec![0; REGION as usize],
                ))
            })
            .collect();
        let mut bufs: Vec<_> = (0..DEPTH).map(|_| Some(vec![0; REGION as usize])).collect();
        let (mut best_plain, mut best_fixed): (Option<Sample>, Option<Sample>) = (None, None);
        for round in 0..rounds {
            let p = timed(budget, |_| plain_batch(&mut ring, &mut plain));
            let f = timed(budget, |_| fixed_batch(&mut ring, &fixed, &mut bufs));
            eprintln!(
                "round {round}: plain {:.0} ops/s {:.0} ns CPU/op | fixed {:.0} ops/s {:.0} ns CPU/op",
                p.ops_per_sec(),
                p.cpu_ns_per_op(),
                f.ops_per_sec(),
                f.cpu_ns_per_op()
            );
            let better = |best: Option<Sample>, s: Sample| match best {
                Some(b) if b.cpu_ns_per_op() <= s.cpu_ns_per_op() => Some(b),
                _ => Some(s),
            };
            best_plain = better(best_plain, p);
            best_fixed = better(best_fixed, f);
        }
        ring.release(fixed);
        drop(plain);
        (best_plain.unwrap(), best_fixed.unwrap())
    });
    let (plain, fixed) = worker.join().unwrap();
    println!(
        "| io_uring 4 KiB page-cached reads, {DEPTH} in flight | ops/s | CPU ns/op | CPU ratio |"
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| plain fd (`Ring::read` of a `LentRegion`, `types::Fd`) | {:.0} | {:.0} | 1.000 |",
        plain.ops_per_sec(),
        plain.cpu_ns_per_op()
    );
    println!(
        "| fixed file (`Ring::register` + `read_fixed`) | {:.0} | {:.0} | {:.3} |",
        fixed.ops_per_sec(),
        fixed.cpu_ns_per_op(),
        fixed.cpu_ns_per_op() / plain.cpu_ns_per_op()
    );
    assert_eq!(lender.outstanding(), 0);
    lender.close_wait().unwrap();
    let _ = std::fs::remove_file(path);
}
