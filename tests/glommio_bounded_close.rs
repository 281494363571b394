//! `LentDmaFile::close_timeout`: the owner's bounded close hands the wrapper back,
//! still lending and still open on the same file, when loans do not come back, as
//! when a task holding one is leaked with its dropped executor.
#![cfg(feature = "glommio")]

mod glommio_common;

use fdlend::glommio::{BlockingReader, LentDmaFile};
use fdlend::LendError;
use glommio::io::DmaFile;
use glommio_common::*;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BLOCKS: usize = 4;

#[test]
fn a_loan_leaked_with_its_executor_makes_the_bounded_close_time_out_with_the_file_open() {
    let _serial = serial();
    let dir = disk_dir("bounded-leaked");
    let path = dir.join("data");
    write_tagged(&path, 41, BLOCKS);
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        let loan = file.loan().unwrap();
        // Another executor's task holds a reader of the loan and is still pending
        // when its executor is dropped: glommio leaks the task, and the loan with it.
        thread::spawn(move || {
            let executor = executor();
            executor.run(async move {
                let reader = BlockingReader::new(loan);
                glommio::spawn_local(async move {
                    let block = reader.read_at(0, BLOCK).await.unwrap();
                    assert_eq!(block, expected_block(41, 0));
                    drop(block);
                    std::future::pending::<()>().await;
                    drop(reader);
                })
                .detach();
                glommio::timer::sleep(Duration::from_millis(20)).await;
            });
            drop(executor);
        })
        .join()
        .unwrap();

        let timed_out = file
            .close_timeout(Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!(timed_out.outstanding(), 1, "the leaked loan");
        let file = timed_out.into_inner();
        // Still open, still this file, still usable and lending.
        assert_eq!(fds_naming(&path), 1);
        assert_eq!(identity(fd_of(&file)), path_identity(&path));
        let block = file.dma().read_at(2 * BLOCK as u64, BLOCK).await.unwrap();
        assert_eq!(&block[..], &expected_block(41, 2)[..]);
        let region = file.region(BLOCK as u64, BLOCK as u64).unwrap();
        assert_eq!(region.read_to_vec().unwrap(), expected_block(41, 1));
        drop(region);
        let timed_out = file
            .reclaim_timeout(Duration::from_millis(10))
            .await
            .unwrap_err();
        assert_eq!(timed_out.outstanding(), 1);
        // The owner's way out: keep the file (here, leak it with its leaked loan).
        std::mem::forget(timed_out.into_inner());
    });
}

#[test]
fn a_timed_out_close_leaves_the_file_lending_and_a_later_one_closes() {
    let _serial = serial();
    let dir = disk_dir("bounded-retry");
    let path = dir.join("data");
    write_tagged(&path, 42, BLOCKS);
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        let ticket = file.ticket();
        let loan = file.loan().unwrap();
        let (give_back, wait) = mpsc::channel::<()>();
        let holder = thread::spawn(move || {
            wait.recv().unwrap();
            let block = pread_direct(&loan, 0, BLOCK).unwrap();
            drop(loan);
            block
        });
        let timed_out = file
            .close_timeout(Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(timed_out.outstanding(), 1);
        let file = timed_out.into_inner();
        // Lending again: tickets pin, new loans are given.
        drop(ticket.pin().unwrap());
        drop(file.loan().unwrap());
        give_back.send(()).unwrap();
        file.close_timeout(Duration::from_secs(30))
            .await
            .expect("the loan came back in time")
            .unwrap();
        assert_eq!(holder.join().unwrap(), expected_block(42, 0));
        assert_eq!(fds_naming(&path), 0);
        assert_eq!(
            ticket.pin().unwrap_err(),
            LendError::Closed { fd: ticket.fd() }
        );
    });
}

fn fd_of(file: &LentDmaFile) -> std::os::fd::BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(file)
}
