//! The rows as they are measured (a progress line on stderr each) and the markdown
//! tables they end up in (stdout; `--table` prints those alone, for the README).

use crate::in_flight::Memory;
use crate::scale::Churn;
use crate::timing::Settings;
use std::time::Duration;

/// One line of the table.
pub struct Row {
    name: String,
    fdlend: String,
    baseline_name: String,
    baseline: String,
    ratio: String,
    target: String,
    met: &'static str,
}

/// The ratio fdlend / baseline a row promises to stay under, if any.
#[derive(Clone, Copy)]
pub enum Target {
    None,
    AtMost(f64),
}

impl Target {
    fn text(self) -> String {
        match self {
            Target::None => String::new(),
            Target::AtMost(limit) => format!("≤ {limit}"),
        }
    }
}

pub fn row(
    name: &str,
    fdlend_ns: f64,
    baseline_name: &str,
    baseline_ns: f64,
    target: Target,
) -> Row {
    let ratio = fdlend_ns / baseline_ns;
    // Judged at two decimals: run to run, a ratio here moves by ±0.01 at best, so a
    // third decimal says nothing about the code.
    let met = match target {
        Target::None => "",
        Target::AtMost(limit) if (ratio * 100.0).round() <= (limit * 100.0).round() => "yes",
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

/// CPU model and vendor (from /proc/cpuinfo), CPU count and kernel: the numbers
/// mean little without them, and a table must never mix vendors.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    let model = field("model name").unwrap_or_else(|| "unknown CPU".to_owned());
    let vendor = match field("vendor_id").as_deref() {
        Some("AuthenticAMD") => "AMD".to_owned(),
        Some("GenuineIntel") => "Intel".to_owned(),
        Some(other) => other.to_owned(),
        None => "unknown vendor".to_owned(),
    };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model} (vendor: {vendor}), {cpus} CPUs, Linux {}",
        kernel.trim()
    )
}

pub fn print_table(
    rows: &[Row],
    memory: &[Memory],
    churn: &[Churn],
    fd_note: &str,
    settings: &Settings,
    took: Duration,
    table_only: bool,
) {
    if !table_only {
        println!();
    }
    println!(
        "Measured on {} — best of {} alternating rounds of {} ms each; 2-thread rows: median of {} alternating rounds, each on one of 8 counts (files, `Arc`s) in turn, first start to last end, per call of each thread.",
        machine(),
        settings.rounds,
        settings.sample.as_millis(),
        settings.rounds * 8
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
    println!();
    println!("{fd_note}");
    println!();
    println!("| files registered, lent once, closed | fdlend ns / file | `dup` + `close` ns / file | ratio | heap B / lent file | resident B / lent file | heap B kept / file after close |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for c in churn {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} |",
            c.files,
            c.lend_ns,
            c.dup_ns,
            c.lend_ns / c.dup_ns,
            c.heap_per_file,
            c.rss_per_file,
            c.kept_heap_per_file
        );
    }
    if !table_only {
        println!();
        println!("(whole run: {:.1} s)", took.as_secs_f64());
    }
}
