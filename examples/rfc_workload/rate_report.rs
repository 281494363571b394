//! The rate mode's two tables on stdout: what a hand-off costs the owner and the
//! worker with each handle, and what the fd limit does to dup() at the target rate.

use crate::config::Config;
use crate::rate_mode::RateResults;
use crate::rate_run::RateRun;
use std::time::Duration;

/// Prints one row: the name, then one cell per run, in the runs' order.
fn row(name: &str, runs: &[RateRun], cell: impl Fn(&RateRun) -> String) {
    print!("{name:<40}");
    for run in runs {
        print!("{:>18}", cell(run));
    }
    println!();
}

fn per_hand_off(run: &RateRun, cpu: Duration) -> String {
    format!("{:.0} ns", cpu.as_nanos() as f64 / run.handed.max(1) as f64)
}

pub fn print_rate_tables(config: &Config, results: &RateResults) {
    let unpaced = &results.unpaced;
    println!();
    println!(
        "RFC rate: 4 KiB regions of a page-cached file, owner thread -> {} worker(s), \
         {} hand-offs per batch",
        config.rate_workers, config.batch
    );
    row("", unpaced, |r| r.kind.name().to_string());
    row("hand-offs /s (as fast as workers take)", unpaced, |r| {
        format!("{:.0}", r.handed as f64 / r.seconds)
    });
    row("owner CPU per hand-off", unpaced, |r| {
        per_hand_off(r, r.owner_cpu)
    });
    let floor = unpaced
        .iter()
        .find(|r| r.kind == crate::rate_run::HandleKind::Bare)
        .map(|r| r.owner_cpu.as_nanos() as f64 / r.handed.max(1) as f64);
    if let Some(floor) = floor {
        row("  of which the handle (minus floor)", unpaced, |r| {
            let owner = r.owner_cpu.as_nanos() as f64 / r.handed.max(1) as f64;
            // Rounded before printing, so noise around zero shows as 0, not -0.
            format!("{} ns", (owner - floor).round() as i64)
        });
    }
    row("worker CPU per hand-off (pread+release)", unpaced, |r| {
        per_hand_off(r, r.worker_cpu)
    });
    row("peak hand-offs in flight", unpaced, |r| {
        r.peak_in_flight.to_string()
    });
    row("peak fds in flight (/proc/self/fd)", unpaced, |r| {
        r.peak_fds.to_string()
    });

    let held = &results.held;
    if let Some(first) = held.first() {
        println!();
        println!(
            "At {:.0} hand-offs/s, each held {} ms, RLIMIT_NOFILE {} (as found):",
            config.target,
            config.hold.as_millis(),
            first.fd_limit
        );
        row("", held, |r| r.kind.name().to_string());
        row("hand-offs offered /s", held, |r| {
            format!("{:.0}", r.offered as f64 / r.seconds)
        });
        row("hand-offs done", held, |r| r.handed.to_string());
        row("refused (EMFILE)", held, |r| {
            let share = 100.0 * r.refused as f64 / r.offered.max(1) as f64;
            format!("{} ({share:.0}%)", r.refused)
        });
        row("peak hand-offs in flight", held, |r| {
            r.peak_in_flight.to_string()
        });
        row("peak fds in flight (/proc/self/fd)", held, |r| {
            r.peak_fds.to_string()
        });
        row("owner CPU per hand-off offered", held, |r| {
            format!(
                "{:.0} ns",
                r.owner_cpu.as_nanos() as f64 / r.offered.max(1) as f64
            )
        });
    }
    println!(
        "(CPU rows: each thread's CLOCK_THREAD_CPUTIME_ID over the whole run, divided by \
         its hand-offs; workers really pread and check every region.)"
    );
    let wrong: u64 = unpaced.iter().chain(held).map(|r| r.wrong_bytes).sum();
    if wrong > 0 {
        println!("(regions read short or with the wrong bytes: {wrong})");
    }
}
