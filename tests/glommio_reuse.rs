//! Closing a lent `DmaFile` while loans are out on several threads, then reusing
//! its fd number for new opens: no handle ever reads the wrong file. Its own binary,
//! so no other test takes the numbers it expects to see reused.
#![cfg(feature = "glommio")]

mod glommio_common;

use fdlend::glommio::LentDmaFile;
use fdlend::{Loan, Ticket};
use glommio::io::DmaFile;
use glommio_common::*;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

const ROUNDS: u32 = 24;
const BLOCKS: usize = 16;
const WORKERS: usize = 3;

/// Reads a few blocks through `loan`, returning it in steps (a clone outlives the
/// original), and checks every byte and the inode.
fn read_and_return(loan: Loan, id: u32, ident: (u64, u64)) {
    for index in 0..BLOCKS / 2 {
        assert_eq!(identity(&loan), ident);
        let block = pread_direct(&loan, (index * BLOCK) as u64, BLOCK).unwrap();
        assert_eq!(block, expected_block(id, index), "file {id} block {index}");
    }
    let clone = loan.try_clone().expect("clones work while closing");
    drop(loan);
    for index in BLOCKS / 2..BLOCKS {
        assert_eq!(identity(&clone), ident);
        let block = pread_direct(&clone, (index * BLOCK) as u64, BLOCK).unwrap();
        assert_eq!(block, expected_block(id, index), "file {id} block {index}");
    }
}

#[test]
fn close_with_loans_out_then_fd_reuse_never_reads_the_wrong_file() {
    let dir = disk_dir("reuse");
    let paths: Vec<_> = (0..ROUNDS)
        .map(|id| {
            let path = dir.join(format!("file-{id}"));
            write_tagged(&path, id, BLOCKS);
            path
        })
        .collect();

    // Workers hold loans across the owner's close.
    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let (send, receive) = mpsc::channel::<(Loan, u32, (u64, u64))>();
        senders.push(send);
        workers.push(thread::spawn(move || {
            for (loan, id, ident) in receive {
                read_and_return(loan, id, ident);
            }
        }));
    }

    // A pinner keeps trying every ticket ever issued, before, during and after its
    // file's close and the reuse of its number: a pin that succeeds must be its file.
    let stop = Arc::new(AtomicBool::new(false));
    let (tickets, issued) = mpsc::channel::<(Ticket, u32, (u64, u64))>();
    let pinner = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut known = Vec::new();
            let (mut pinned, mut refused) = (0u64, 0u64);
            while !stop.load(Ordering::SeqCst) {
                known.extend(issued.try_iter());
                for &(ticket, id, ident) in &known {
                    match ticket.pin() {
                        Ok(loan) => {
                            pinned += 1;
                            assert_eq!(identity(&loan), ident, "a pin names its own file");
                            let block = pread_direct(&loan, 0, BLOCK).unwrap();
                            assert_eq!(block, expected_block(id, 0));
                        }
                        Err(_) => refused += 1,
                    }
                }
            }
            (pinned, refused)
        })
    };

    let numbers = run(async {
        let mut numbers = Vec::new();
        for (id, path) in paths.iter().enumerate() {
            let id = id as u32;
            let file = LentDmaFile::new(DmaFile::open(path).await.unwrap()).unwrap();
            let ident = path_identity(path);
            assert_eq!(identity(&file), ident);
            numbers.push(file.as_raw_fd());
            tickets.send((file.ticket(), id, ident)).unwrap();
            for send in &senders {
                send.send((file.loan().unwrap(), id, ident)).unwrap();
            }
            // Loans are out on every worker; this resolves once they are back.
            file.close().await.unwrap();
            assert_eq!(fds_naming(path), 0, "file {id} closed");
        }
        numbers
    });

    drop(senders);
    for worker in workers {
        worker.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    let (pinned, refused) = pinner.join().unwrap();
    let reused = numbers.windows(2).filter(|pair| pair[0] == pair[1]).count();
    eprintln!("fd numbers {numbers:?}: {reused} reuses; pins {pinned} ok, {refused} refused");
    assert!(
        reused > 0,
        "the test needs fd numbers to be reused: {numbers:?}"
    );
    assert!(refused > 0);
    for path in &paths {
        assert_eq!(fds_naming(path), 0);
    }
}
