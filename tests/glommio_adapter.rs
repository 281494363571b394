//! `LentDmaFile` on real on-disk `O_DIRECT` files: std threads read the executor's
//! own fd, and the async close is well-ordered.
#![cfg(feature = "glommio")]

mod glommio_common;

use fdlend::glommio::LentDmaFile;
use fdlend::LendError;
use glommio::io::DmaFile;
use glommio_common::*;
use std::os::fd::AsRawFd;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

const BLOCKS: usize = 64;

#[test]
fn std_threads_read_regions_through_the_dma_files_own_fd() {
    let _serial = serial();
    let dir = disk_dir("adapter-read");
    let path = dir.join("data");
    write_tagged(&path, 7, BLOCKS);
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        let loans: Vec<_> = (0..4).map(|_| file.loan().unwrap()).collect();
        assert_eq!(file.outstanding(), 4);
        assert_eq!(fds_naming(&path), 1, "four loans, still one fd: no dup");

        let workers: Vec<_> = loans
            .into_iter()
            .enumerate()
            .map(|(worker, loan)| {
                thread::spawn(move || {
                    assert!(is_direct(&loan), "the lent fd is glommio's O_DIRECT fd");
                    for index in (worker..BLOCKS).step_by(4) {
                        let got = pread_direct(&loan, (index * BLOCK) as u64, BLOCK).unwrap();
                        assert_eq!(got, expected_block(7, index), "block {index}");
                    }
                    // A multi-block region, as a sendfile or a big read would take.
                    let start = 8 + worker;
                    let region = pread_direct(&loan, (start * BLOCK) as u64, 3 * BLOCK).unwrap();
                    let want: Vec<u8> = (start..start + 3)
                        .flat_map(|i| expected_block(7, i))
                        .collect();
                    assert_eq!(region, want);
                    identity(&loan)
                })
            })
            .collect();

        // The executor keeps using the DmaFile through glommio meanwhile.
        let head = file.dma().read_at(0, BLOCK).await.unwrap();
        assert_eq!(&head[..], &expected_block(7, 0)[..]);

        for worker in workers {
            assert_eq!(worker.join().unwrap(), path_identity(&path));
        }
        assert_eq!(file.outstanding(), 0);
        file.close().await.unwrap();
        assert_eq!(fds_naming(&path), 0, "glommio closed the one fd");
    });
}

#[test]
fn close_resolves_only_after_the_last_loan_is_back() {
    let _serial = serial();
    let dir = disk_dir("adapter-close");
    let path = dir.join("data");
    write_tagged(&path, 3, BLOCKS);
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        let ticket = file.ticket();
        let loan = file.loan().unwrap();
        let (go, wait) = mpsc::channel::<()>();
        let returned = Arc::new(AtomicBool::new(false));
        let worker = {
            let returned = Arc::clone(&returned);
            thread::spawn(move || {
                wait.recv().unwrap();
                // Reads after the owner started closing still see the file.
                let block = pread_direct(&loan, 5 * BLOCK as u64, BLOCK).unwrap();
                returned.store(true, Ordering::SeqCst);
                drop(loan);
                block
            })
        };

        let mut close = pin!(file.close());
        assert!(
            poll_once(&mut close).await.is_pending(),
            "a loan is out, so close must wait"
        );
        assert_eq!(
            ticket.pin().unwrap_err(),
            LendError::Closing { fd: ticket.fd() }
        );
        assert_eq!(fds_naming(&path), 1, "still open for the loan");

        go.send(()).unwrap();
        // Woken by the worker's drop; no polling loop.
        close.await.unwrap();
        assert!(
            returned.load(Ordering::SeqCst),
            "close resolved only after the loan was returned"
        );
        assert_eq!(fds_naming(&path), 0);
        assert!(ticket.pin().is_err());
        assert_eq!(worker.join().unwrap(), expected_block(3, 5));
    });
}

#[test]
fn reclaim_with_local_loans_alive_here_refuses_and_the_last_local_loan_closes() {
    let _serial = serial();
    let dir = disk_dir("adapter-reclaim");
    let path = dir.join("data");
    write_tagged(&path, 4, BLOCKS);
    run(async {
        let dma = DmaFile::open(&path).await.unwrap();
        let file = LentDmaFile::new(dma).unwrap();
        let fd = file.as_raw_fd();
        let ticket = file.ticket();
        let local = file.local_loan();
        // Waiting here could never end while this thread holds a local loan.
        let error = file.reclaim().await.unwrap_err();
        assert_eq!(error, LendError::LocalLoansOutstanding { fd, count: 1 });
        // The local loan still reads the file; the close is now its to do.
        assert_eq!(
            pread_direct(&local, 0, BLOCK).unwrap(),
            expected_block(4, 0)
        );
        assert_eq!(fds_naming(&path), 1);
        drop(local);
        assert!(!ticket.is_current(), "no longer lent");
        assert_eq!(fds_naming(&path), 0, "the last local loan closed it");
    });
}

#[test]
fn reclaim_gives_the_dma_file_back_unclosed() {
    let _serial = serial();
    let dir = disk_dir("adapter-reclaim-unclosed");
    let path = dir.join("data");
    write_tagged(&path, 4, BLOCKS);
    executor().run(async {
        let dma = DmaFile::open(&path).await.unwrap();
        let file = LentDmaFile::new(dma).unwrap();
        let ticket = file.ticket();
        let dma = file.reclaim().await.unwrap();
        assert!(!ticket.is_current(), "no longer lent");
        assert_eq!(fds_naming(&path), 1, "reclaim does not close");
        assert_eq!(identity(fd_of(&dma)), path_identity(&path));
        let block = dma.read_at(2 * BLOCK as u64, BLOCK).await.unwrap();
        assert_eq!(&block[..], &expected_block(4, 2)[..]);
        dma.close().await.unwrap();
        assert_eq!(fds_naming(&path), 0);
    });
}

#[test]
fn into_dma_file_only_when_nothing_is_lent() {
    let _serial = serial();
    let dir = disk_dir("adapter-into");
    let path = dir.join("data");
    write_tagged(&path, 5, 4);
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        let loan = file.loan().unwrap();
        let file = file.into_dma_file().expect_err("a loan is out");
        assert_eq!(file.outstanding(), 1);
        drop(loan);
        let dma = file.into_dma_file().expect("nothing lent");
        // The same fd, relent: fdlend's slot for it was freed.
        let file = LentDmaFile::new(dma).unwrap();
        assert_eq!(
            pread_direct(file.loan().unwrap(), 0, BLOCK).unwrap(),
            expected_block(5, 0)
        );
        file.close().await.unwrap();
        assert_eq!(fds_naming(&path), 0);
    });
}

/// Dropped with loans out, the wrapper's close waits on its executor for the last
/// loan, then glommio closes the fd (behind any op it still has queued for it).
#[test]
fn dropping_the_wrapper_with_loans_out_closes_through_glommio_after_the_last_loan() {
    let _serial = serial();
    let dir = disk_dir("adapter-drop");
    let path = dir.join("data");
    write_tagged(&path, 6, BLOCKS);
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        let loans: Vec<_> = (0..3).map(|_| file.loan().unwrap()).collect();
        let ticket = file.ticket();
        drop(file);
        assert_eq!(fds_naming(&path), 1, "the loans keep it open");
        assert_eq!(
            ticket.pin().unwrap_err(),
            LendError::Closing { fd: ticket.fd() }
        );
        let workers: Vec<_> = loans
            .into_iter()
            .enumerate()
            .map(|(i, loan)| {
                thread::spawn(move || pread_direct(&loan, (i * BLOCK) as u64, BLOCK).unwrap())
            })
            .collect();
        for (i, worker) in workers.into_iter().enumerate() {
            assert_eq!(worker.join().unwrap(), expected_block(6, i));
        }
        assert_eq!(
            ticket.pin().unwrap_err(),
            LendError::Closed { fd: ticket.fd() }
        );
        let_glommio_run().await;
        assert_eq!(fds_naming(&path), 0, "glommio closed it, once");
    });
}

#[test]
fn dropping_an_unlent_wrapper_closes_through_glommio() {
    let _serial = serial();
    let dir = disk_dir("adapter-drop-unlent");
    let path = dir.join("data");
    write_tagged(&path, 8, 4);
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        assert_eq!(fds_naming(&path), 1);
        drop(file);
        let_glommio_run().await;
        assert_eq!(fds_naming(&path), 0);
    });
}

/// A few turns of the executor: glommio submits the closes it queued.
async fn let_glommio_run() {
    for _ in 0..3 {
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
    }
}

fn fd_of(dma: &DmaFile) -> std::os::fd::BorrowedFd<'_> {
    // SAFETY: `dma` keeps its fd open for the borrow's lifetime.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(dma.as_raw_fd()) }
}

/// glommio issue #605: on disks without poll queues polled reads fail with
/// EOPNOTSUPP. After `run`'s primer (a non-empty first file, so the probe is not
/// fooled) the executor's own reads succeed whichever ring glommio chose; the test
/// prints the choice.
#[test]
fn glommio_reads_succeed_on_this_disk() {
    let _serial = serial();
    let dir = disk_dir("adapter-ring");
    let path = dir.join("data");
    write_tagged(&path, 9, 16);
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        for index in 0..16 {
            let block = file
                .dma()
                .read_at((index * BLOCK) as u64, BLOCK)
                .await
                .unwrap();
            assert_eq!(&block[..], &expected_block(9, index)[..]);
        }
        let stats = glommio::executor().io_stats();
        eprintln!(
            "glommio file reads: poll ring {:?}, main ring {:?}, latency ring {:?}",
            stats.poll_ring.file_reads(),
            stats.main_ring.file_reads(),
            stats.latency_ring.file_reads()
        );
        file.close().await.unwrap();
    });
}

/// The `fdlend::io` regions work on a glommio fd too: unaligned ranges read through
/// the `O_DIRECT`-aware path, and sendfile from another thread.
#[test]
fn lent_regions_of_a_dma_file_read_and_send_on_std_threads() {
    let _serial = serial();
    use fdlend::LentRegion;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    let dir = disk_dir("adapter-region");
    let path = dir.join("data");
    write_tagged(&path, 11, 8);
    let whole: Vec<u8> = (0..8).flat_map(|i| expected_block(11, i)).collect();
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        let unaligned = file.region(100, 5000).unwrap();
        let sent =
            LentRegion::new(file.loan().unwrap(), 2 * BLOCK as u64, 3 * BLOCK as u64).unwrap();
        let (mut receiver, sender) = UnixStream::pair().unwrap();
        let worker = thread::spawn(move || {
            let bytes = unaligned.read_to_vec().unwrap();
            let progress = sent.send_to(&sender).unwrap();
            assert!(
                matches!(progress, fdlend::io::SendProgress::Done { sent: 12288, .. }),
                "{progress:?}"
            );
            bytes
        });
        let expected_sent = &whole[2 * BLOCK..5 * BLOCK];
        let mut got = vec![0u8; expected_sent.len()];
        // Blocking here is fine: the worker needs nothing from the executor.
        receiver.read_exact(&mut got).unwrap();
        assert_eq!(got, expected_sent);
        assert_eq!(worker.join().unwrap(), &whole[100..5100]);
        file.close().await.unwrap();
        assert_eq!(fds_naming(&path), 0);
    });
}
