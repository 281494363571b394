//! The rate mode's schedule: unpaced runs of every handle kind (ABC, CBA, ABC, CBA,
//! so a shared machine's drift and bursts of load spread over all three), then the held runs at the target rate under the
//! fd limit as the process found it.

use crate::config::Config;
use crate::rate_run::{run_rate, HandleKind, Pace, RateRun};
use std::path::Path;
use std::time::Duration;

pub struct RateResults {
    /// Dup, loan, bare: as fast as the workers take hand-offs.
    pub unpaced: Vec<RateRun>,
    /// Dup, loan: paced at `Config::target` with `Config::hold` holds.
    pub held: Vec<RateRun>,
}

const KINDS: [HandleKind; 3] = [HandleKind::Dup, HandleKind::Loan, HandleKind::Bare];

/// Unpaced rounds; each runs every kind for `duration / (2 * ROUNDS)`.
const ROUNDS: usize = 4;

pub fn run_rate_mode(
    config: &Config,
    path: &Path,
) -> Result<RateResults, Box<dyn std::error::Error>> {
    warm_page_cache(path)?;
    let unpaced = |duration| Pace {
        workers: config.rate_workers,
        batch: config.batch,
        duration,
        target_per_s: None,
        hold: Duration::ZERO,
    };
    // Unreported: thread stacks, allocator arenas, the file's pages.
    let warm_up = Duration::from_millis(200).min(config.duration);
    run_rate(path, HandleKind::Bare, unpaced(warm_up))?;

    let slice = config.duration / (2 * ROUNDS) as u32;
    let mut results: Vec<Option<RateRun>> = KINDS.iter().map(|_| None).collect();
    for round in 0..ROUNDS {
        eprintln!("  [rate] unpaced, round {}/{ROUNDS}", round + 1);
        let mut order: Vec<usize> = (0..KINDS.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let run = run_rate(path, KINDS[index], unpaced(slice))?;
            match &mut results[index] {
                Some(total) => total.absorb(run),
                slot => *slot = Some(run),
            }
        }
    }
    let results = results.into_iter().flatten().collect();

    let held_pace = Pace {
        target_per_s: Some(config.target),
        hold: config.hold,
        ..unpaced(config.duration / 2)
    };
    let mut held = Vec::new();
    for kind in [HandleKind::Dup, HandleKind::Loan] {
        eprintln!(
            "  [rate] {} at {}/s, held {} ms",
            kind.name(),
            config.target,
            config.hold.as_millis()
        );
        held.push(run_rate(path, kind, held_pace)?);
    }
    Ok(RateResults {
        unpaced: results,
        held,
    })
}

/// Reads the file once through the page cache, so every run's preads hit memory.
fn warm_page_cache(path: &Path) -> std::io::Result<()> {
    std::io::copy(&mut std::fs::File::open(path)?, &mut std::io::sink())?;
    Ok(())
}
