//! The timed rows, section by section, each fdlend operation against what it
//! replaces. Sections run in a fixed order and some hand on the handles they made,
//! so every row sees the same lender state it always has.

use crate::table::{row, Row, Target};
use crate::timing::{contended_pair, pair, Settings};
use fdlend::{Lender, Loan, LocalLoan, ShardedLender, SharedLoan};
use std::hint::black_box;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

/// The classic hand-off: a new kernel fd, closed by the receiver.
fn dup_close(fd: &impl AsRawFd) {
    // SAFETY: dup of an fd this process holds open; the result is owned below.
    let copy = unsafe { libc::dup(fd.as_raw_fd()) };
    assert!(copy >= 0, "dup: {}", std::io::Error::last_os_error());
    // SAFETY: `copy` is a fresh fd nothing else owns.
    drop(black_box(unsafe { OwnedFd::from_raw_fd(copy) }));
}

/// The physical limit of any counted handle: one `fetch_add` and one `fetch_sub` on
/// a single `AtomicU64` (a `lock xadd` each on x86), nothing else.
fn xadd_pair(count: &AtomicU64) {
    black_box(count.fetch_add(1, Ordering::Relaxed));
    black_box(count.fetch_sub(1, Ordering::Release));
}

/// Handing the fd to a receiver and back, each fdlend way, against the physical limit
/// of a counted handle, and against `dup` + `close` for scale.
pub fn hand_off(settings: &Settings, lender: &Lender, rows: &mut Vec<Row>) {
    eprintln!("hand-off: lend + release vs an xadd pair, and vs dup + close");
    let count = AtomicU64::new(1);
    let limit = "xadd pair on one `AtomicU64`";
    let (a, b) = pair(settings, &mut || xadd_pair(black_box(&count)), &mut || {
        dup_close(lender)
    });
    rows.push(row(
        "xadd pair (the limit of any counted handle)",
        a,
        "`dup` + `close`",
        b,
        Target::None,
    ));
    let (a, b) = pair(
        settings,
        &mut || drop(black_box(lender.loan().unwrap())),
        &mut || xadd_pair(black_box(&count)),
    );
    rows.push(row("`loan()` + drop", a, limit, b, Target::AtMost(1.1)));
    let (a, b) = pair(
        settings,
        &mut || {
            // SAFETY: the token is returned at once and not used after.
            let token = black_box(unsafe { lender.lend_fd() }.unwrap());
            // SAFETY: returned exactly once; the lender is alive, so never `close_now`ed.
            unsafe { fdlend::return_fd(token) }.unwrap();
        },
        &mut || xadd_pair(black_box(&count)),
    );
    rows.push(row(
        "`lend_fd` + `return_fd`",
        a,
        limit,
        b,
        Target::AtMost(1.1),
    ));
    let (a, b) = pair(
        settings,
        &mut || {
            let token = black_box(lender.lend_raw().unwrap());
            // SAFETY: returned exactly once, never used.
            unsafe { fdlend::return_raw(token) }.unwrap();
        },
        &mut || xadd_pair(black_box(&count)),
    );
    rows.push(row(
        "`lend_raw` + `return_raw` (checked)",
        a,
        limit,
        b,
        Target::None,
    ));
    let ticket = lender.ticket();
    let (a, b) = pair(
        settings,
        &mut || drop(black_box(black_box(&ticket).pin().unwrap())),
        &mut || xadd_pair(black_box(&count)),
    );
    rows.push(row(
        "`Ticket::pin` + drop",
        a,
        limit,
        b,
        Target::AtMost(1.1),
    ));
    let (a, b) = pair(
        settings,
        &mut || drop(black_box(lender.loan().unwrap())),
        &mut || dup_close(lender),
    );
    rows.push(row(
        "`loan()` + drop",
        a,
        "`dup` + `close`",
        b,
        Target::None,
    ));
    let (a, b) = pair(
        settings,
        &mut || drop(black_box(lender.local_loan())),
        &mut || dup_close(lender),
    );
    rows.push(row(
        "`local_loan()` + drop (same thread)",
        a,
        "`dup` + `close`",
        b,
        Target::None,
    ));
}

/// Copying a handle on one thread, against the std pointer each one stands in for.
/// Returns the handles it made; the caller keeps them until the lender closes.
pub fn uncontended_clone(
    settings: &Settings,
    lender: &Lender,
    arc: &Arc<OwnedFd>,
    rows: &mut Vec<Row>,
) -> (Loan, LocalLoan, Weak<OwnedFd>) {
    eprintln!("clone + drop, uncontended");
    let loan = lender.loan().unwrap();
    let (a, b) = pair(
        settings,
        &mut || drop(black_box(black_box(&loan).clone())),
        &mut || drop(black_box(Arc::clone(black_box(arc)))),
    );
    rows.push(row(
        "`Loan` clone + drop",
        a,
        "`Arc<OwnedFd>`",
        b,
        Target::AtMost(1.0),
    ));

    let local = lender.local_loan();
    let rc = Rc::new(lender.as_fd().try_clone_to_owned().unwrap());
    let (a, b) = pair(
        settings,
        &mut || drop(black_box(black_box(&local).clone())),
        &mut || drop(black_box(Rc::clone(black_box(&rc)))),
    );
    rows.push(row(
        "`LocalLoan` clone + drop",
        a,
        "`Rc<OwnedFd>`",
        b,
        Target::AtMost(1.0),
    ));
    // Both closures hold the reference itself (`move`), so neither pays an extra
    // load for the closure's own capture.
    let rc_ref = &rc;
    let (a, b) = pair(
        settings,
        &mut move || drop(black_box(black_box(lender).local_loan())),
        &mut move || drop(black_box(Rc::clone(black_box(rc_ref)))),
    );
    rows.push(row(
        "`local_loan()` + drop",
        a,
        "`Rc<OwnedFd>` clone + drop",
        b,
        Target::AtMost(1.0),
    ));
    drop(rc);

    let ticket = lender.ticket();
    let weak = Arc::downgrade(arc);
    let (a, b) = pair(
        settings,
        &mut || drop(black_box(black_box(&ticket).pin().unwrap())),
        &mut || drop(black_box(black_box(&weak).upgrade().unwrap())),
    );
    rows.push(row(
        "`Ticket::pin` + drop",
        a,
        "`Weak::upgrade` + drop",
        b,
        Target::None,
    ));
    (loan, local, weak)
}

/// How many counts (files, `Arc`s) the 2-thread rows rotate through.
const ADDRESSES: usize = 7;

/// Cloning one file's handle on two threads at once, where the shared count's cache
/// line bounces, and the sharded lender that avoids it. Returns the sharded lender
/// and its loan; the caller keeps them until the lender closes.
pub fn two_threads(
    settings: &Settings,
    lender: &Lender,
    loan: &Loan,
    arc: &Arc<OwnedFd>,
    rows: &mut Vec<Row>,
) -> (ShardedLender, SharedLoan) {
    eprintln!("2 threads, one file");
    let sharded = ShardedLender::new(lender.as_fd().try_clone_to_owned().unwrap()).unwrap();
    let shared = sharded.loan();
    // Each round races on another file's count (and another `Arc`'s): a contended
    // line's cost depends on its address, so both sides get the same spread of them.
    let files: Vec<Lender> = (0..ADDRESSES)
        .map(|_| Lender::try_from(lender.as_fd().try_clone_to_owned().unwrap()).unwrap())
        .collect();
    let loans: Vec<Loan> = std::iter::once(loan.clone())
        .chain(files.iter().map(|file| file.loan().unwrap()))
        .collect();
    let arcs: Vec<Arc<OwnedFd>> = std::iter::once(Arc::clone(arc))
        .chain((0..ADDRESSES).map(|_| Arc::new(lender.as_fd().try_clone_to_owned().unwrap())))
        .collect();
    let loan_op = |round: usize| -> Box<dyn FnMut() + Send> {
        let mine: Loan = loans[round % loans.len()].clone();
        Box::new(move || drop(black_box(black_box(&mine).clone())))
    };
    let arc_op = |round: usize| -> Box<dyn FnMut() + Send> {
        let mine = Arc::clone(&arcs[round % arcs.len()]);
        Box::new(move || drop(black_box(Arc::clone(black_box(&mine)))))
    };
    let shared_op = |_round: usize| -> Box<dyn FnMut() + Send> {
        let mine: SharedLoan = shared.clone();
        Box::new(move || drop(black_box(black_box(&mine).clone())))
    };
    let (a, b) = contended_pair(settings, 2, &loan_op, &arc_op);
    rows.push(row(
        "`Loan` clone + drop, 2 threads",
        a,
        "`Arc`, 2 threads",
        b,
        Target::AtMost(1.0),
    ));
    let (a, b) = contended_pair(settings, 2, &shared_op, &arc_op);
    rows.push(row(
        "`SharedLoan` clone + drop, 2 threads",
        a,
        "`Arc`, 2 threads",
        b,
        Target::AtMost(0.5),
    ));
    // The CPU number from the rseq area glibc registers (the default), then from
    // `sched_getcpu` (the fallback where there is none).
    for rseq in [true, false] {
        let used = fdlend::bench::cpu_from_rseq(rseq);
        let (a, b) = pair(
            settings,
            &mut || drop(black_box(black_box(&shared).clone())),
            &mut || drop(black_box(Arc::clone(black_box(arc)))),
        );
        let (name, target) = if used {
            (
                "`SharedLoan` clone + drop, 1 thread (CPU from rseq)",
                Target::AtMost(1.1),
            )
        } else if rseq {
            (
                "`SharedLoan` clone + drop, 1 thread (no rseq area: `sched_getcpu`)",
                Target::AtMost(1.1),
            )
        } else {
            (
                "`SharedLoan` clone + drop, 1 thread (CPU from `sched_getcpu`)",
                Target::None,
            )
        };
        rows.push(row(name, a, "`Arc<OwnedFd>`", b, target));
    }
    fdlend::bench::cpu_from_rseq(true);
    drop((loans, arcs));
    for file in files {
        file.close_wait().unwrap();
    }
    (sharded, shared)
}

/// A whole hand-off with real work in it, so the saving shows at the scale of a read.
pub fn pread_hand_off(settings: &Settings, lender: &Lender, rows: &mut Vec<Row>) {
    eprintln!("end-to-end hand-off: 4 KiB pread at a moving offset");
    let (mut buf, mut buf2) = ([0u8; 4096], [0u8; 4096]);
    let mut offset = 0i64;
    let mut next = move || {
        offset = (offset + 4096) % (1 << 20);
        offset
    };
    let mut next2 = next;
    let (a, b) = pair(
        settings,
        &mut || {
            let loan = lender.loan().unwrap();
            let n = nix::sys::uio::pread(&loan, black_box(&mut buf), next()).unwrap();
            black_box(n);
        },
        &mut || {
            // SAFETY: dup of an fd this process holds open; owned below.
            let copy = unsafe { OwnedFd::from_raw_fd(libc::dup(lender.as_raw_fd())) };
            let n = nix::sys::uio::pread(&copy, black_box(&mut buf2), next2()).unwrap();
            black_box(n);
        },
    );
    rows.push(row(
        "`loan` + 4 KiB `pread` + drop",
        a,
        "`dup` + `pread` + `close`",
        b,
        Target::None,
    ));
}
