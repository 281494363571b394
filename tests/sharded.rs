//! Sharded lending on real fds: shared loans read the right file from many threads,
//! add no fds, keep working across the switch to the atomic count, and the fd closes
//! exactly once, when the last of them (or the last core loan) is gone.
//!
//! Tests here are serialised: they count the process's fds and recycle fd numbers.
//!
//! They run under Miri too (scripts/check's miri stage), where `sharded.rs` spreads
//! threads over shards by a per-thread number instead of `sched_getcpu`; there the
//! lent files are disk files (Miri has no `memfd_create`) and the loops are shorter.

mod common;

use common::{
    assert_not_closed_again, identity, join, open_fd_count, pattern, pipe, pread_exact, read_pipe,
    serial, write_end, write_through, WriteEnd,
};
use fdlend::{LendError, ShardedLender, SharedLoan};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{mpsc, Barrier};
use std::thread;

/// A file holding `content`: a memfd, or under Miri (which cannot create one) a disk
/// file.
fn file_with(content: &[u8]) -> std::fs::File {
    if cfg!(miri) {
        common::disk_file_with(content)
    } else {
        common::memfd_with(content)
    }
}

/// Clone-read-drop rounds per reader thread: enough for real CPUs to migrate threads
/// between shards mid-loop; under Miri, enough to interleave the threads' shards.
const ROUNDS: usize = if cfg!(miri) { 20 } else { 2_000 };

#[test]
fn shared_loans_read_the_file_from_many_threads_and_close_it_once() {
    let _serial = serial();
    let content = pattern(11, 64 * 1024);
    let file = file_with(&content);
    let file_id = identity(&file);
    let sharded = ShardedLender::try_from(file).unwrap();
    let number = sharded.as_raw_fd();

    let start = std::sync::Arc::new(Barrier::new(4));
    let readers: Vec<_> = (0..4)
        .map(|reader| {
            let loan = sharded.loan();
            let content = content.clone();
            let start = std::sync::Arc::clone(&start);
            thread::spawn(move || {
                start.wait();
                for round in 0..ROUNDS {
                    // Clones land on whatever CPU this thread is on now; they must
                    // balance out with the drops wherever those land.
                    let clone = loan.clone();
                    let offset = (reader * 4096 + round * 512) % (content.len() - 512);
                    assert_eq!(
                        pread_exact(&clone, 512, offset),
                        &content[offset..offset + 512]
                    );
                }
                assert_eq!(identity(&loan), file_id, "the loan names the lent file");
                loan
            })
        })
        .collect();
    let loans: Vec<SharedLoan> = readers.into_iter().map(join).collect();
    assert_eq!(
        sharded.outstanding(),
        4,
        "every clone came back, wherever it landed"
    );

    let closing = sharded.close();
    assert!(!closing.is_closed(), "four shared loans still out");
    // Still readable after the switch, and clones still work there.
    let after = loans[0].clone();
    assert_eq!(pread_exact(&after, 16, 0), &content[..16]);
    drop(loans);
    assert!(
        !closing.is_closed(),
        "one clone made after the switch is still out"
    );
    drop(after);
    closing.wait().expect("close(2) of the memfd");
    assert_not_closed_again(number, || {});
}

/// After the switch every drop goes to the central count, and the one that reaches
/// zero frees the family and closes on its own thread while the other holders may
/// still be leaving their drops: that last decrement must come after every other
/// holder's uses. Here nothing else orders the holders (they only write the pipe,
/// which TSan treats as a release, never an acquire), so under ThreadSanitizer
/// (`scripts/check sanitize`) a central decrement weakened to Release shows up as a
/// race between one holder's last read of the family and the free by another.
#[test]
fn shared_loans_dropped_at_once_after_the_switch_close_after_all_their_uses() {
    let _serial = serial();
    let (read, write) = pipe();
    let sharded = ShardedLender::try_from(write).unwrap();
    let number = sharded.as_raw_fd();
    let tags = *b"abcd";
    let go = std::sync::Arc::new(Barrier::new(tags.len() + 1));
    let holders: Vec<_> = tags
        .into_iter()
        .map(|tag| {
            let loan = sharded.loan();
            let go = std::sync::Arc::clone(&go);
            thread::spawn(move || {
                go.wait();
                write_through(&loan, &[tag]);
                drop(loan);
            })
        })
        .collect();
    // The switch comes before any holder's drop: all of them count centrally.
    let closing = sharded.close();
    assert!(!closing.is_closed(), "four shared loans still out");
    go.wait();
    closing.wait().expect("close(2) of the pipe's write end");
    let (mut written, write_end) = read_pipe(&read);
    written.sort_unstable();
    assert_eq!(
        (written, write_end),
        (tags.to_vec(), WriteEnd::Closed),
        "every holder wrote before the close"
    );
    // The holder that ended the family may still be finishing its drop.
    assert_not_closed_again(number, || holders.into_iter().for_each(join));
}

#[test]
fn eof_arrives_when_the_last_shared_loan_drops_on_another_thread() {
    let _serial = serial();
    let (read, write) = pipe();
    let sharded = ShardedLender::try_from(write).unwrap();
    let number = sharded.as_raw_fd();
    let (releases, holders): (Vec<_>, Vec<_>) = [b'x', b'y']
        .into_iter()
        .map(|tag| {
            let loan = sharded.loan();
            let (release, release_rx) = mpsc::channel::<()>();
            let holder = thread::spawn(move || {
                write_through(&loan, &[tag]);
                release_rx.recv().unwrap();
                drop(loan);
            });
            (release, holder)
        })
        .unzip();
    // Deferred close: the owner lets go while the holders still hold.
    drop(sharded);
    let mut seen = Vec::new();
    common::spin_until("both holders' writes", || {
        seen.extend(read_pipe(&read).0);
        seen.len() >= 2
    });
    seen.sort_unstable();
    assert_eq!(seen, b"xy");
    assert_eq!(
        write_end(&read),
        WriteEnd::Open,
        "two shared loans keep it open"
    );

    let mut holders = holders.into_iter();
    releases[0].send(()).unwrap();
    join(holders.next().unwrap());
    assert_eq!(
        write_end(&read),
        WriteEnd::Open,
        "one shared loan keeps it open"
    );
    releases[1].send(()).unwrap();
    common::spin_until("EOF after the last shared loan", || {
        write_end(&read) == WriteEnd::Closed
    });
    // The closing thread may still be finishing its drop: it must not close again.
    assert_not_closed_again(number, || holders.for_each(join));
}

#[test]
#[cfg_attr(
    miri,
    ignore = "a scale test: minutes under Miri, which has no memfd_create either"
)]
fn two_hundred_thousand_shared_loans_add_no_fds() {
    let _serial = serial();
    let file = common::memfd_with(&pattern(3, 4096));
    let before = open_fd_count();
    let sharded = ShardedLender::try_from(file).unwrap();
    let loan = sharded.loan();
    let loans: Vec<SharedLoan> = thread::scope(|scope| {
        let halves: Vec<_> = (0..2)
            .map(|_| scope.spawn(|| (0..100_000).map(|_| loan.clone()).collect::<Vec<_>>()))
            .collect();
        halves.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(loans.len(), 200_000);
    assert_eq!(sharded.outstanding(), 200_001);
    assert_eq!(
        open_fd_count(),
        before,
        "200k shared loans, not one more fd"
    );
    assert_eq!(
        pread_exact(&loans[123_456], 8, 100),
        &pattern(3, 4096)[100..108]
    );
    drop(loans);
    drop(loan);
    sharded.close_wait().unwrap();
    assert_eq!(open_fd_count(), before - 1, "the memfd itself is closed");
}

#[test]
fn the_family_is_one_core_loan_until_its_last_shared_loan_is_gone() {
    let _serial = serial();
    let (read, write) = pipe();
    let sharded = ShardedLender::try_from(write).unwrap();
    assert_eq!(
        sharded.lender().outstanding(),
        1,
        "the family's one core loan"
    );
    let shared = sharded.loan();
    let ticket = shared.ticket();
    assert_eq!(ticket.epoch(), sharded.lender().epoch());
    let core = shared.to_loan().unwrap();

    // With a shared loan out, the switch leaves the core lent: it cannot take the fd.
    let lender = sharded.into_lender();
    assert_eq!(lender.outstanding(), 2, "the family and the plain loan");
    let lender = lender.into_owned_fd().unwrap_err();
    drop(shared);
    assert_eq!(
        lender.outstanding(),
        1,
        "the family ended with its last shared loan"
    );

    let closing = lender.close();
    assert_eq!(
        ticket.pin().unwrap_err(),
        LendError::Closing { fd: ticket.fd() }
    );
    assert_eq!(
        write_end(&read),
        WriteEnd::Open,
        "the plain loan keeps it open"
    );
    write_through(&core, b"c");
    drop(core);
    closing.wait().unwrap();
    assert_eq!(read_pipe(&read), (b"c".to_vec(), WriteEnd::Closed));
}

#[test]
fn a_switch_with_nothing_lent_hands_the_fd_back_unclosed() {
    let _serial = serial();
    let (read, write) = pipe();
    let write_id = identity(&write);
    let sharded = ShardedLender::try_from(write).unwrap();
    let loans: Vec<SharedLoan> = (0..10).map(|_| sharded.loan()).collect();
    thread::spawn(move || drop(loans)).join().unwrap();
    assert_eq!(sharded.outstanding(), 0);
    let fd = sharded.into_lender().into_owned_fd().expect("nothing lent");
    assert_eq!(identity(&fd), write_id);
    write_through(fd.as_fd(), b"o");
    drop(fd);
    assert_eq!(read_pipe(&read), (b"o".to_vec(), WriteEnd::Closed));
}
