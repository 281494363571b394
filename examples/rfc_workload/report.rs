//! The side-by-side table on stdout: one column per mode, one row per measure.

use crate::config::Config;
use crate::run_result::RunResult;
use std::time::Duration;

/// The `p` quantile of ns samples already sorted ascending, for humans.
fn percentile(sorted: &[u64], p: f64) -> String {
    if sorted.is_empty() {
        return "-".into();
    }
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    human_ns(sorted[index] as f64)
}

/// The median and the tail together, as every latency row shows them.
fn p50_p99(sorted: &[u64]) -> String {
    format!("{} / {}", percentile(sorted, 0.5), percentile(sorted, 0.99))
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

/// Prints one row: the name, then one cell per run, in the runs' order.
fn row(name: &str, runs: &[RunResult], cell: impl Fn(&RunResult) -> String) {
    print!("{name:<38}");
    for run in runs {
        print!("{:>22}", cell(run));
    }
    println!();
}

pub fn print_table(config: &Config, full: &[RunResult], limited: &[RunResult]) {
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
    row("", full, |r| format!("{} per hand-off", r.mode.name()));
    let per = |r: &RunResult, d: Duration| human_ns(d.as_nanos() as f64 / r.handed.max(1) as f64);
    row("reads served /s", full, |r| {
        format!("{:.0}", r.reads as f64 / r.seconds)
    });
    row("hand-offs /s", full, |r| {
        format!("{:.0}", r.handed as f64 / r.seconds)
    });
    row("dup() / loan() alone p50 / p99", full, |r| {
        p50_p99(&r.handle_ns)
    });
    row("hand-off latency p50 / p99 (+queue)", full, |r| {
        p50_p99(&r.handoff_ns)
    });
    row("owner-thread CPU, whole run", full, |r| {
        format!("{:.0} ms", r.owner_cpu.as_secs_f64() * 1e3)
    });
    row("owner-thread CPU per read served", full, |r| {
        human_ns(r.owner_cpu.as_nanos() as f64 / r.reads.max(1) as f64)
    });
    row("worker CPU per hand-off", full, |r| per(r, r.worker_cpu));
    row("process CPU, whole run", full, |r| {
        format!("{:.0} ms", r.process_cpu.as_secs_f64() * 1e3)
    });
    row("peak hand-offs in flight", full, |r| {
        r.peak_in_flight.to_string()
    });
    row("peak fds in flight (/proc/self/fd)", full, |r| {
        r.peak_fds_in_flight.to_string()
    });
    row("decision to release p50 / p99", full, |r| {
        p50_p99(&r.end_to_end_ns)
    });
    row("owner close waited for", full, |r| match r.close_wait {
        Some((waited, loans)) => format!("{loans} loans, {}", human_ns(waited.as_nanos() as f64)),
        None => "n/a (dups)".into(),
    });
    if config.sendfile {
        row("sendfile to loopback", full, |r| {
            format!("{:.1} MiB", r.sent_bytes as f64 / (1 << 20) as f64)
        });
    }
    if !limited.is_empty() {
        let limit = config.fd_limit;
        row(
            &format!("RLIMIT_NOFILE={limit}: hand-offs done"),
            limited,
            |r| r.handed.to_string(),
        );
        row(
            &format!("RLIMIT_NOFILE={limit}: refused (EMFILE)"),
            limited,
            |r| r.refused.to_string(),
        );
        row(
            &format!("RLIMIT_NOFILE={limit}: peak fds in flight"),
            limited,
            |r| r.peak_fds_in_flight.to_string(),
        );
    }
    println!(
        "(CPU rows: each thread's CLOCK_THREAD_CPUTIME_ID over the whole run. Every \
         O_DIRECT read here costs a virtio doorbell (a VM exit, tens of µs, measured with \
         perf) and a worker's wake-up, next to which dup()'s ~200 ns does not show: the \
         rate tables, on page-cached reads, isolate it.)"
    );
    let errors: u64 = full.iter().chain(limited).map(|r| r.read_errors).sum();
    if errors > 0 {
        println!("(owner read errors: {errors})");
    }
}
