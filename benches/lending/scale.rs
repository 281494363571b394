//! How the costs grow with the work: many distinct files lent at once (each op on
//! the next of them in a shuffled order, so no cache or prefetcher holds them all),
//! registering and closing many files, what a lent file keeps resident, and two
//! threads on two neighbouring files.

use crate::counting_alloc::tally;
use crate::table::{row, Row, Target};
use crate::timing::{contended_pair, pair, Settings};
use fdlend::{Lender, Loan, Ticket};
use std::hint::black_box;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The largest scale; fewer when `ulimit -n` cannot hold that many fds.
const WANTED: usize = 100_000;
/// Fds kept free for everything else the bench opens.
const SPARE_FDS: usize = 500;

/// Raises the soft fd limit to the hard one; returns how many files fit at once.
pub fn raise_fd_limit() -> (usize, u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid `rlimit` to fill.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above; raising the soft limit up to the hard one is always allowed.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    let fit = (limit.rlim_cur as usize).saturating_sub(SPARE_FDS);
    (fit.min(WANTED), limit.rlim_cur)
}

fn dup_of(fd: &impl AsRawFd) -> OwnedFd {
    // SAFETY: dup of an fd this process holds open; the result is owned below.
    let copy = unsafe { libc::dup(fd.as_raw_fd()) };
    assert!(copy >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: `copy` is a fresh fd nothing else owns.
    unsafe { OwnedFd::from_raw_fd(copy) }
}

/// A fixed shuffle of `0..n` (so both sides of a row walk the same order).
fn shuffled(n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..n).rev() {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        order.swap(i, (state >> 33) as usize % (i + 1));
    }
    order
}

/// Per-op cost with `n` distinct files lent at once: `loan()` + drop and
/// `Ticket::pin` + drop against an `Arc` clone + drop over `n` distinct `Arc`s, and
/// `dup` + `close` over the same `n` files.
pub fn many_files(settings: &Settings, source: &impl AsFd, n: usize, rows: &mut Vec<Row>) {
    eprintln!("{n} distinct files lent at once");
    let lenders: Vec<Lender> = (0..n)
        .map(|_| Lender::new(source.as_fd().try_clone_to_owned().unwrap()).unwrap())
        .collect();
    let tickets: Vec<Ticket> = lenders.iter().map(Lender::ticket).collect();
    // The `Arc`s hold the number alone: `n` more fds would not fit under the limit.
    let arcs: Vec<Arc<RawFd>> = lenders.iter().map(|l| Arc::new(l.as_raw_fd())).collect();
    let order = shuffled(n);
    let (mut i, mut j) = (0, 0);
    let next = |k: &mut usize| {
        *k = if *k + 1 == n { 0 } else { *k + 1 };
        order[*k]
    };
    let arc_op = |j: &mut usize| drop(black_box(Arc::clone(black_box(&arcs[next(j)]))));
    let label = |what: &str| format!("{what}, {n} files lent");
    let arc_label = format!("`Arc` clone + drop, {n} `Arc`s");
    let (a, b) = pair(
        settings,
        &mut || drop(black_box(lenders[next(&mut i)].loan().unwrap())),
        &mut || arc_op(&mut j),
    );
    rows.push(row(
        &label("`loan()` + drop"),
        a,
        &arc_label,
        b,
        Target::None,
    ));
    let (a, b) = pair(
        settings,
        &mut || drop(black_box(black_box(&tickets[next(&mut i)]).pin().unwrap())),
        &mut || arc_op(&mut j),
    );
    rows.push(row(
        &label("`Ticket::pin` + drop"),
        a,
        &arc_label,
        b,
        Target::None,
    ));
    let (a, b) = pair(
        settings,
        &mut || drop(black_box(lenders[next(&mut i)].loan().unwrap())),
        &mut || drop(black_box(dup_of(&lenders[next(&mut j)]))),
    );
    rows.push(row(
        &label("`loan()` + drop"),
        a,
        &format!("`dup` + `close`, {n} files"),
        b,
        Target::None,
    ));
    drop(arcs);
    for lender in lenders {
        lender.try_close().expect("nothing lent").unwrap();
    }
}

/// What registering, lending and closing `n` files costs, against `dup` + `close` of
/// each, and what a lent file keeps resident.
pub struct Churn {
    pub files: usize,
    pub lend_ns: f64,
    pub dup_ns: f64,
    pub heap_per_file: f64,
    pub rss_per_file: f64,
    pub kept_heap_per_file: f64,
}

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf only reads a constant.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

/// Register + one loan + close of `n` distinct files (all open at once, then all
/// closed) against `dup` + `close` of each; heap and resident bytes per lent file.
/// The fd numbers used here were never lent before, so the records and table pages
/// they get are new (later registrations on these numbers reuse them).
pub fn churn(source: &impl AsFd, n: usize) -> Churn {
    eprintln!("register + lend + close of {n} files");
    let fds = |n: usize| -> Vec<OwnedFd> {
        (0..n)
            .map(|_| source.as_fd().try_clone_to_owned().unwrap())
            .collect()
    };
    let heap0 = tally().0;
    let files = fds(n);
    let (heap_fds, rss_fds) = (tally().0, rss_bytes());
    let start = Instant::now();
    let lenders: Vec<Lender> = files
        .into_iter()
        .map(|fd| {
            let lender = Lender::new(fd).unwrap();
            drop(black_box(lender.loan().unwrap()));
            lender
        })
        .collect();
    let (heap_lent, rss_lent) = (tally().0, rss_bytes());
    for lender in lenders {
        lender.try_close().expect("nothing lent").unwrap();
    }
    let lend_ns = start.elapsed().as_nanos() as f64 / n as f64;
    let kept = tally().0 - heap0;
    let start = Instant::now();
    let dups = fds(n);
    drop(black_box(dups));
    let dup_ns = start.elapsed().as_nanos() as f64 / n as f64;
    Churn {
        files: n,
        lend_ns,
        dup_ns,
        heap_per_file: (heap_lent - heap_fds) as f64 / n as f64,
        rss_per_file: rss_lent.saturating_sub(rss_fds) as f64 / n as f64,
        kept_heap_per_file: kept as f64 / n as f64,
    }
}

/// `Loan` clone + drop with 2 threads, each on its own file, the two files
/// registered one after the other (neighbouring records), against 2 `Arc`s made one
/// after the other (neighbouring allocations).
pub fn two_files(settings: &Settings, source: &impl AsFd, rows: &mut Vec<Row>) {
    eprintln!("2 threads, 2 neighbouring files");
    let lenders: Vec<Lender> = (0..2)
        .map(|_| Lender::new(source.as_fd().try_clone_to_owned().unwrap()).unwrap())
        .collect();
    let loans: Vec<Loan> = lenders.iter().map(|l| l.loan().unwrap()).collect();
    let arcs: Vec<Arc<OwnedFd>> = (0..2)
        .map(|_| Arc::new(source.as_fd().try_clone_to_owned().unwrap()))
        .collect();
    let (next_loan, next_arc) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let loan_op = |_round: usize| -> Box<dyn FnMut() + Send> {
        // Relaxed: only hands the two threads different files.
        let mine = loans[next_loan.fetch_add(1, Ordering::Relaxed) % 2].clone();
        Box::new(move || drop(black_box(black_box(&mine).clone())))
    };
    let arc_op = |_round: usize| -> Box<dyn FnMut() + Send> {
        // Relaxed: as above.
        let mine = Arc::clone(&arcs[next_arc.fetch_add(1, Ordering::Relaxed) % 2]);
        Box::new(move || drop(black_box(Arc::clone(black_box(&mine)))))
    };
    let (a, b) = contended_pair(settings, 2, &loan_op, &arc_op);
    rows.push(row(
        "`Loan` clone + drop, 2 threads on 2 neighbouring files",
        a,
        "2 `Arc`s, 2 threads",
        b,
        Target::AtMost(1.0),
    ));
    drop((loans, arcs));
    for lender in lenders {
        lender.close_wait().unwrap();
    }
}
