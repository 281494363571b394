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
//! Where to read: `run.rs` is one run of one mode (the owner's side), `workers.rs` the
//! threads that hold the hand-offs, `measure.rs` the sampling, `report.rs` the table.

mod config;
mod data_file;
mod measure;
mod report;
mod run;
mod run_result;
mod workers;

use config::{parse_args, Config, USAGE};
use data_file::{data_dir, write_data_file};
use glommio::{LocalExecutorBuilder, Placement};
use nix::sys::resource::{getrlimit, setrlimit, Resource};
use report::print_table;
use run::run_one;
use run_result::Mode;
use std::time::{Duration, Instant};
use workers::Sink;

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
