//! The command line: flags, their defaults, and the checks that keep a run meaningful.

use std::path::PathBuf;
use std::time::Duration;

/// The `O_DIRECT` unit: reads, offsets and hand-off ranges are all multiples of it.
pub const BLOCK: usize = 4096;

pub const USAGE: &str = "\
rfc_workload: dup() per hand-off vs fdlend loans, at the RFC's rate and on a glommio executor

  --mode M          rate, glommio or both (default both)
  --duration S      seconds per mode (default 4): rate mode, half of it per handle kind
                    unpaced (in 4 slices) and half per held run; glommio mode, two
                    halves per mode and a half per fd-limit run
  --hold-ms N       how long a worker holds each hand-off (default 200)
  --dir PATH        where to put the data file (must not be tmpfs)
  --file-mib N      data file size in MiB (default 64)

rate mode: an owner thread hands 4 KiB regions of a page-cached file to workers in
batches with a dup(), a loan or no handle, as fast as the workers take them; then dup
vs loan at --target hand-offs/s, each held --hold-ms, under the fd limit as found
  --target N        hand-offs/s of the held runs (default 200000)
  --rate-workers N  worker threads (default 1: the owner and one worker fill 2 cores)
  --batch N         hand-offs per batch, i.e. per worker wake-up (default 256)

glommio mode: an executor serves paced O_DIRECT reads and hands a fraction of them to
a pool of threads, with a dup() or a LentDmaFile loan
  --rate N          reads/s the executor serves (default 20000)
  --fraction F      share of reads handed to the pool (default 0.1)
  --threads N       worker threads (default 4)
  --region BYTES    bytes a worker reads per hand-off (default 16384)
  --fd-limit N      RLIMIT_NOFILE for the limit runs, 0 to skip (default 256)
  --sendfile        workers also sendfile the range to a loopback socket";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum RunMode {
    Glommio,
    Rate,
    Both,
}

impl RunMode {
    pub fn glommio(self) -> bool {
        self != RunMode::Rate
    }

    pub fn rate(self) -> bool {
        self != RunMode::Glommio
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub mode: RunMode,
    pub target: f64,
    pub rate_workers: usize,
    pub batch: usize,
    pub rate: f64,
    pub fraction: f64,
    pub duration: Duration,
    pub threads: usize,
    pub hold: Duration,
    pub region: usize,
    pub fd_limit: u64,
    pub sendfile: bool,
    pub dir: Option<PathBuf>,
    pub file_mib: usize,
}

/// The config from `std::env::args`, or the message to print: `USAGE` itself for
/// `--help` (so the caller can exit 0 for it), anything else for a bad command line.
pub fn parse_args() -> Result<Config, String> {
    let mut config = Config {
        mode: RunMode::Both,
        target: 200_000.0,
        rate_workers: 1,
        batch: 256,
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
            "--mode" => {
                config.mode = match value()?.as_str() {
                    "glommio" => RunMode::Glommio,
                    "rate" => RunMode::Rate,
                    "both" => RunMode::Both,
                    other => return Err(format!("--mode: {other}? (glommio, rate or both)")),
                }
            }
            "--target" => config.target = value()?.parse().map_err(|e| bad(&e))?,
            "--rate-workers" => config.rate_workers = value()?.parse().map_err(|e| bad(&e))?,
            "--batch" => config.batch = value()?.parse().map_err(|e| bad(&e))?,
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
    if config.rate_workers == 0 || config.batch == 0 || config.target <= 0.0 {
        return Err("need --rate-workers > 0, --batch > 0, --target > 0".into());
    }
    Ok(config)
}
