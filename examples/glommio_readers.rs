//! Cost per read of the two ways to read a lent fd on another glommio executor, in
//! one run: `BlockingReader` (crates.io glommio: `pread` on the executor's blocking
//! pool) against `BorrowedDmaFile` (patched glommio: the executor's own io_uring).
//!
//! ```text
//! cargo run --release --features glommio-ring --example glommio_readers
//! ```
//!
//! Two files on the disk the target dir is on: one read through the page cache (a
//! plain fd: what each path adds to a 4 KiB read), one `O_DIRECT` (the device's time
//! dominates). Each is read one read at a time (latency) and 32 at a time
//! (throughput), over random aligned 4 KiB blocks; wall time per read, medians of 5.
//! glommio's blocking pool has one thread unless the executor is built with
//! `blocking_thread_pool_placement`: the third column gives it 8.

use fdlend::glommio::{BlockingReader, BorrowedDmaFile};
use fdlend::{Lender, Loan};
use glommio::{LocalExecutorBuilder, Placement, PoolPlacement};
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

const BLOCK: usize = 4096;
const BLOCKS: u64 = 4096; // a 16 MiB file
const READS: usize = 4000;
const ROUNDS: usize = 5;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/glommio-readers");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("data.bin");
    let mut file = std::fs::File::create(&path).unwrap();
    let block: Vec<u8> = (0..BLOCK).map(|i| i as u8).collect();
    for _ in 0..BLOCKS {
        file.write_all(&block).unwrap();
    }
    file.sync_all().unwrap();
    drop(file);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .map(|line| line.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!("CPU: {cpu}; {READS} reads of 4 KiB per measurement, median of {ROUNDS}");
    println!(
        "{:<10} {:<11} {:>16} {:>18} {:>16}",
        "fd", "reads", "BlockingReader", "(8 pool threads)", "BorrowedDmaFile"
    );
    for (name, direct) in [("buffered", false), ("O_DIRECT", true)] {
        let flags = if direct { libc::O_DIRECT } else { 0 };
        let fd = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(&path)
            .unwrap();
        let lender = Lender::new(fd.into()).unwrap();
        for depth in [1, 32] {
            let blocking = per_read(|| measure_blocking(lender.loan().unwrap(), depth, 1));
            let pooled = per_read(|| measure_blocking(lender.loan().unwrap(), depth, 8));
            let ring = per_read(|| measure_ring(lender.loan().unwrap(), depth));
            println!(
                "{name:<10} {:<11} {:>13.2} µs {:>15.2} µs {:>13.2} µs",
                format!("{depth} at once"),
                blocking,
                pooled,
                ring
            );
        }
        lender.close_wait().unwrap();
    }
}

/// Median µs per read over `ROUNDS` runs of `measure` (each returns seconds).
fn per_read(mut measure: impl FnMut() -> f64) -> f64 {
    let mut runs: Vec<f64> = (0..ROUNDS).map(|_| measure()).collect();
    runs.sort_by(|a, b| a.partial_cmp(b).unwrap());
    runs[ROUNDS / 2] * 1e6 / READS as f64
}

/// Runs `reads` on a fresh executor on its own thread and times them.
fn on_executor<F: Future<Output = ()> + 'static>(
    loan: Loan,
    pool: usize,
    reads: impl FnOnce(Loan) -> F + Send + 'static,
) -> f64 {
    std::thread::spawn(move || {
        LocalExecutorBuilder::new(Placement::Unbound)
            .io_memory(8 << 20)
            .blocking_thread_pool_placement(PoolPlacement::Unbound(pool))
            .make()
            .unwrap()
            .run(async move {
                let start = Instant::now();
                reads(loan).await;
                start.elapsed().as_secs_f64()
            })
    })
    .join()
    .unwrap()
}

fn offsets(depth: usize, lane: usize) -> impl Iterator<Item = u64> {
    // A fixed pseudo-random walk per lane (xorshift), the same for both readers.
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ lane as u64;
    (0..READS / depth).map(move |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % BLOCKS) * BLOCK as u64
    })
}

fn measure_blocking(loan: Loan, depth: usize, pool: usize) -> f64 {
    on_executor(loan, pool, move |loan| async move {
        let reader = Rc::new(BlockingReader::new(loan));
        let lanes: Vec<_> = (0..depth)
            .map(|lane| {
                let reader = Rc::clone(&reader);
                glommio::spawn_local(async move {
                    for at in offsets(depth, lane) {
                        let bytes = reader.read_at(at, BLOCK).await.unwrap();
                        assert_eq!(bytes.len(), BLOCK);
                    }
                })
            })
            .collect();
        for lane in lanes {
            lane.await;
        }
    })
}

fn measure_ring(loan: Loan, depth: usize) -> f64 {
    on_executor(loan, 1, move |loan| async move {
        let reader = Rc::new(BorrowedDmaFile::new(loan).await.unwrap());
        let lanes: Vec<_> = (0..depth)
            .map(|lane| {
                let reader = Rc::clone(&reader);
                glommio::spawn_local(async move {
                    for at in offsets(depth, lane) {
                        let bytes = reader.read_at_aligned(at, BLOCK).await.unwrap();
                        assert_eq!(bytes.len(), BLOCK);
                    }
                })
            })
            .collect();
        for lane in lanes {
            lane.await;
        }
    })
}
