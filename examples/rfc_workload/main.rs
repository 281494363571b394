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
//!
//! The rate mode then shows the RFC's own rate (2M reads/s, 10% handed off): an owner
//! thread hands 4 KiB regions of the (page-cached) file to workers in batches, with a
//! `dup()`, a loan or no handle per hand-off, and measures each thread's CPU over the
//! whole run; then at 200k hand-offs/s with 200 ms holds under the fd limit as found.
//!
//! Where to read: `run.rs` is one glommio run of one mode (the owner's side),
//! `workers.rs` the threads that hold the hand-offs, `measure.rs` the sampling,
//! `report.rs` the table; `rate_mode.rs` the rate mode's schedule, `rate_run.rs` one
//! rate run (the owner), `rate_workers.rs` its workers, `rate_report.rs` its tables;
//! `cpu_clock.rs` the CPU clocks both modes read.

mod config;
mod cpu_clock;
mod data_file;
mod measure;
mod rate_mode;
mod rate_report;
mod rate_run;
mod rate_workers;
mod report;
mod run;
mod run_result;
mod workers;

use config::{parse_args, Config, USAGE};
use data_file::{data_dir, write_data_file};
use glommio::{LocalExecutorBuilder, Placement};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use rate_mode::run_rate_mode;
use rate_report::print_rate_tables;
use report::print_table;
use run::run_one;
use run_result::Mode;
use std::time::{Duration, Instant};
use workers::Sink;

fn main() {
    let config = match parse_args() {
        Ok(config) => config,
        Err(message) if message == USAGE => {
            println!("{message}");
            std::process::exit(0);
        }
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
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
    let both = || -> Result<_, Box<dyn std::error::Error>> {
        let glommio = config
            .mode
            .glommio()
            .then(|| run_glommio_mode(config, &path))
            .transpose()?;
        let rate = config
            .mode
            .rate()
            .then(|| run_rate_mode(config, &path))
            .transpose()?;
        Ok((glommio, rate))
    };
    let outcome = both();
    let _ = std::fs::remove_file(&path);
    let (glommio, rate) = outcome?;
    // The RFC's rate first: it is the headline; the glommio table is its 1% version.
    if let Some(rate) = &rate {
        print_rate_tables(config, rate);
    }
    if let Some((full, limited)) = glommio {
        print_table(config, &full, &limited);
    }
    if let Some(rate) = rate {
        let wrong: u64 = rate
            .unpaced
            .iter()
            .chain(&rate.held)
            .map(|r| r.wrong_bytes)
            .sum();
        if wrong > 0 {
            return Err(format!("{wrong} rate-mode regions read short or wrong").into());
        }
    }
    eprintln!("total {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

type GlommioResults = (Vec<run_result::RunResult>, Vec<run_result::RunResult>);

/// The glommio mode: both hand-off modes at full fd limit, then both under `--fd-limit`.
fn run_glommio_mode(
    config: &Config,
    path: &std::path::Path,
) -> Result<GlommioResults, Box<dyn std::error::Error>> {
    let sink = config.sendfile.then(Sink::start).transpose()?;
    let executor = LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(2 << 20)
        .make()?;
    executor.run(async {
        // A short unreported run first (page cache, DMA arena, thread stacks), then
        // each mode in two halves, ABBA, so drift in a shared machine's load cancels.
        let warm_up = Duration::from_millis(500).min(config.duration);
        run_one(config, path, Mode::Lend, warm_up, sink.as_ref()).await?;
        let half = config.duration / 2;
        let mut dup = run_one(config, path, Mode::Dup, half, sink.as_ref()).await?;
        let mut lend = run_one(config, path, Mode::Lend, half, sink.as_ref()).await?;
        lend.absorb(run_one(config, path, Mode::Lend, half, sink.as_ref()).await?);
        dup.absorb(run_one(config, path, Mode::Dup, half, sink.as_ref()).await?);
        let full = vec![dup, lend];
        let mut limited = Vec::new();
        if config.fd_limit > 0 {
            let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
            setrlimit(Resource::RLIMIT_NOFILE, config.fd_limit, hard)?;
            for mode in [Mode::Dup, Mode::Lend] {
                let half = config.duration / 2;
                let run = run_one(config, path, mode, half, sink.as_ref()).await;
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
    })
}
