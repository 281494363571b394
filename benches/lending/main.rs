//! fdlend against what it replaces, row by row, in the same run: every row times the
//! fdlend operation and its baseline alternately (several rounds, the best of each),
//! so the ratio survives a noisy machine better than either number does.
//!
//! ```text
//! cargo bench --bench lending               # progress on stderr, then the table
//! cargo bench --bench lending -- --table    # the markdown table alone (for README)
//! cargo bench --bench lending -- --quick    # fewer, shorter rounds (a smoke test)
//! cargo bench --bench lending -- --core     # the one-file rows alone
//! ```
//!
//! A counting `#[global_allocator]` measures allocations per loan for the 200k-in-flight
//! rows. The sharded rows use `fdlend::ShardedLender`.
//!
//! Where to read: `cases.rs` (the timed rows) and `in_flight.rs` (the 200k rows) say
//! what is compared; `timing.rs` how it is timed; `table.rs` how it is printed.

mod cases;
mod counting_alloc;
mod in_flight;
mod scale;
mod table;
mod timing;

use fdlend::Lender;
use in_flight::{dup_in_flight, in_flight_cost};
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use table::print_table;
use timing::Settings;

/// A 1 MiB in-memory file: real fd, no disk in the timings.
fn memfd(len: usize) -> File {
    let fd = nix::sys::memfd::memfd_create("fdlend-bench", nix::sys::memfd::MFdFlags::empty())
        .expect("memfd_create");
    let mut file = File::from(fd);
    let block: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    file.write_all(&block).unwrap();
    file
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let table_only = args.iter().any(|a| a == "--table");
    let quick = args.iter().any(|a| a == "--quick");
    // The one-file rows alone, for a quick look at the core ratios.
    let core_only = args.iter().any(|a| a == "--core");
    let settings = if quick {
        Settings {
            rounds: 3,
            sample: Duration::from_millis(5),
        }
    } else {
        Settings {
            rounds: 31,
            sample: Duration::from_millis(10),
        }
    };
    let started = Instant::now();
    let mut rows = Vec::new();

    let (fit, fd_limit) = scale::raise_fd_limit();
    let file = memfd(1 << 20);
    // First, on fd numbers never lent before: their records and table pages are new.
    let churn = if core_only {
        Vec::new()
    } else {
        vec![scale::churn(&file, fit)]
    };
    let arc = Arc::new(OwnedFd::from(file.try_clone().unwrap()));
    let lender = Lender::try_from(file).unwrap();

    cases::hand_off(&settings, &lender, &mut rows);
    let (loan, local, weak) = cases::uncontended_clone(&settings, &lender, &arc, &mut rows);
    let (sharded, shared) = cases::two_threads(&settings, &lender, &loan, &arc, &mut rows);
    if !core_only {
        cases::pread_hand_off(&settings, &lender, &mut rows);
        scale::two_files(&settings, &lender, &mut rows);
        for n in [1, 1000, fit] {
            scale::many_files(&settings, &lender, n, &mut rows);
        }
    }
    let fd_note = format!(
        "`ulimit -n` here: {fd_limit} (soft raised to hard), so at most {fit} files are lent at once{}.",
        if fit < 100_000 { " instead of 100,000" } else { "" }
    );

    let mut memory = Vec::new();
    if !core_only {
        eprintln!("200k loans in flight");
        let in_flight = 200_000usize;
        memory.push(in_flight_cost("`Loan` (`loan()`)", in_flight, || {
            lender.loan().unwrap()
        }));
        memory.push(in_flight_cost("`SharedLoan` (`clone`)", in_flight, || {
            shared.clone()
        }));
        memory.push(in_flight_cost(
            "`Arc<OwnedFd>` (`clone`)",
            in_flight,
            || Arc::clone(&arc),
        ));
        memory.push(dup_in_flight(&lender, in_flight));
    }

    drop((loan, local, shared, sharded, arc, weak));
    lender.close_wait().unwrap();

    print_table(
        &rows,
        &memory,
        &churn,
        &fd_note,
        &settings,
        started.elapsed(),
        table_only,
    );
}
