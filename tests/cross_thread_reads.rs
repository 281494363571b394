//! Loans read the lender's file from other threads: every byte read through a loan,
//! a clone of it, a pinned ticket or a `LocalLoan::to_send` matches the file.

mod common;

use common::{
    disk_file_with, identity, is_regular, join, memfd_with, pattern, pread_exact, Identity,
};
use fdlend::{Lender, Loan};
use std::fs::File;
use std::sync::Arc;
use std::thread;

const READERS: usize = 4;
const LEN: usize = 256 * 1024;
/// Odd, so reads straddle pages and each reader walks the file in its own order.
const CHUNK: usize = 4093;

/// Reads the whole file through `loan` in chunks, starting at a reader-specific chunk
/// and wrapping around, then once more through a clone of the loan.
fn check_reads(loan: Loan, reader: usize, expected: &[u8], file: Identity) {
    assert_eq!(identity(&loan), file, "the loan names the lender's file");
    let chunks = expected.len().div_ceil(CHUNK);
    for step in 0..chunks {
        let offset = ((reader * 7 + step) % chunks) * CHUNK;
        let len = CHUNK.min(expected.len() - offset);
        assert_eq!(
            pread_exact(&loan, len, offset),
            expected[offset..offset + len],
            "reader {reader} at {offset}"
        );
    }
    let clone = loan.clone();
    drop(loan);
    assert_eq!(
        pread_exact(&clone, expected.len(), 0),
        expected,
        "reader {reader} through a clone"
    );
}

fn loans_read_the_file_on_other_threads(file: File, expected: Vec<u8>) {
    let file_id = identity(&file);
    let lender = Lender::try_from(file).unwrap();
    let expected = Arc::new(expected);
    let readers: Vec<_> = (0..READERS)
        .map(|reader| {
            let loan = lender.loan().unwrap();
            let expected = Arc::clone(&expected);
            thread::spawn(move || check_reads(loan, reader, &expected, file_id))
        })
        .collect();
    // A ticket crosses threads holding nothing; it pins there while the file is open.
    let ticket = lender.ticket();
    let pinned = {
        let expected = Arc::clone(&expected);
        thread::spawn(move || {
            check_reads(
                ticket.pin().expect("pin while open"),
                READERS,
                &expected,
                file_id,
            )
        })
    };
    readers.into_iter().chain([pinned]).for_each(join);
    assert_eq!(lender.outstanding(), 0, "every loan came back");
    lender.close_wait().unwrap();
}

#[test]
fn reads_of_a_disk_file_on_other_threads_match_it() {
    let expected = pattern(1, LEN);
    let file = disk_file_with(&expected);
    assert!(is_regular(&file));
    loans_read_the_file_on_other_threads(file, expected);
}

#[test]
fn reads_of_a_memfd_on_other_threads_match_it() {
    let expected = pattern(2, LEN);
    loans_read_the_file_on_other_threads(memfd_with(&expected), expected);
}

#[test]
fn local_loans_sent_to_other_threads_read_the_file() {
    let expected = Arc::new(pattern(3, LEN));
    let file = disk_file_with(&expected);
    let file_id = identity(&file);
    let lender = Lender::try_from(file).unwrap();
    let local = lender.local_loan();
    let readers: Vec<_> = (0..READERS)
        .map(|reader| {
            let loan = local.to_send().unwrap();
            assert_eq!(loan.epoch(), local.epoch());
            let expected = Arc::clone(&expected);
            thread::spawn(move || check_reads(loan, reader, &expected, file_id))
        })
        .collect();
    // The owner's thread reads through its local loan meanwhile.
    assert_eq!(pread_exact(&local, LEN, 0), *expected);
    readers.into_iter().for_each(join);
    assert_eq!(lender.outstanding(), 1, "only the local loan is left");
    drop(local);
    lender
        .try_close()
        .expect("nothing is lent any more")
        .unwrap();
}
