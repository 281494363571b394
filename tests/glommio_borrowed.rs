//! `BorrowedDmaFile`: a second glommio executor, on another thread, reads regions
//! lent by the first through its own ring; the owner's close waits for it; the fd is
//! closed exactly once and never touched after. Its own binary, because it counts
//! `/proc/self/fd` entries and watches reused fd numbers.
#![cfg(feature = "glommio-ring")]

mod glommio_common;

use fdlend::glommio::{BorrowSource, BorrowedDmaFile, LentDmaFile};
use fdlend::Lender;
use futures_lite::StreamExt;
use glommio::io::{DmaFile, MergedBufferLimit, ReadAmplificationLimit};
use glommio_common::*;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

const BLOCKS: usize = 64;

/// The tests of this binary run one at a time: the first one watches a freed fd
/// number, which a test opening files in parallel could take.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn whole(id: u32, blocks: usize) -> Vec<u8> {
    (0..blocks).flat_map(|i| expected_block(id, i)).collect()
}

/// `(reads on the poll ring, reads on the main ring)` of the current executor since
/// the previous call (glommio's `io_stats` hands out and resets its counters).
fn ring_reads() -> (u64, u64) {
    let stats = glommio::executor().io_stats();
    (
        stats.poll_ring.file_reads().0,
        stats.main_ring.file_reads().0,
    )
}

#[test]
fn a_second_executor_reads_lent_regions_through_its_own_ring_and_the_owners_close_waits() {
    let _serial = one_at_a_time();
    let dir = disk_dir("borrowed-read");
    let path = dir.join("data");
    write_tagged(&path, 21, BLOCKS);
    let data = whole(21, BLOCKS);
    let identity_on_disk = path_identity(&path);

    let (reads_done, wait_reads) = mpsc::channel::<()>();
    let (release, wait_release) = mpsc::channel::<()>();
    let (sentinel_open, wait_sentinel) = mpsc::channel::<()>();
    let (borrower_idle, wait_borrower_idle) = mpsc::channel::<()>();
    let borrower_dropping = Arc::new(AtomicBool::new(false));

    let (borrower, lent_fd) = run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        let lent_fd = file.as_raw_fd();
        let aligned = file.region(3 * BLOCK as u64, 2 * BLOCK as u64).unwrap();
        let unaligned = file.region(100, 5000).unwrap();
        let whole_loan = file.loan().unwrap();
        ring_reads();

        let borrower = {
            let data = data.clone();
            let path = path.clone();
            let borrower_dropping = Arc::clone(&borrower_dropping);
            thread::spawn(move || {
                run(async move {
                    ring_reads();
                    let aligned = BorrowedDmaFile::new(aligned).await.unwrap();
                    let unaligned = BorrowedDmaFile::new(unaligned).await.unwrap();
                    let whole = BorrowedDmaFile::new(whole_loan).await.unwrap();
                    assert_eq!(identity(&whole), identity_on_disk);
                    assert_eq!(whole.as_raw_fd(), lent_fd, "the owner's fd, not a copy");
                    assert!(is_direct(&whole), "glommio's O_DIRECT fd");
                    assert_eq!(whole.alignment(), 512, "this disk's logical block");

                    let got = aligned.read_region().await.unwrap();
                    assert_eq!(&got[..], &data[3 * BLOCK..5 * BLOCK]);
                    let got = unaligned.read_region().await.unwrap();
                    assert_eq!(&got[..], &data[100..5100]);
                    let got = whole
                        .read_at_aligned(7 * BLOCK as u64, BLOCK)
                        .await
                        .unwrap();
                    assert_eq!(&got[..], &data[7 * BLOCK..8 * BLOCK]);
                    // Unaligned at both ends, across a block boundary.
                    let got = whole.read_at(4095, 3).await.unwrap();
                    assert_eq!(&got[..], &data[4095..4098]);
                    // Short at end of file.
                    let end = (BLOCKS * BLOCK) as u64;
                    let got = whole.read_at(end - 10, 100).await.unwrap();
                    assert_eq!(&got[..], &data[data.len() - 10..]);
                    assert!(whole.read_region().await.is_err(), "a loan has no region");

                    let asked: Vec<(u64, usize)> = vec![
                        (0, 17),
                        (4096 * 9 + 3, 600),
                        (4096 * 9 + 100, 50),
                        (60_000, 4096),
                        (end - 100, 4096), // crosses end of file: short
                    ];
                    let mut many = whole.read_many(
                        futures_lite::stream::iter(asked.clone()),
                        MergedBufferLimit::DeviceMaxSingleRequest,
                        ReadAmplificationLimit::NoAmplification,
                    );
                    let mut answered = Vec::new();
                    while let Some(result) = many.next().await {
                        let ((pos, size), bytes) = result.unwrap();
                        let stop = data.len().min(pos as usize + size);
                        assert_eq!(&bytes[..], &data[pos as usize..stop], "({pos}, {size})");
                        answered.push((pos, size));
                    }
                    drop(many);
                    assert_eq!(answered, asked, "every read, in order");

                    let (polled, main) = ring_reads();
                    assert!(
                        polled + main >= 6,
                        "the borrower's reads went through its own rings: {polled} + {main}"
                    );
                    assert_eq!(fds_naming(&path), 1, "three borrowers, still one fd");
                    reads_done.send(()).unwrap();

                    // Hold the loans until the owner has started closing.
                    wait_release.recv().unwrap();
                    // Set before the drops: the last of them returns the loan and may
                    // wake the owner at once.
                    borrower_dropping.store(true, Ordering::SeqCst);
                    drop((aligned, unaligned, whole));
                    // Keep this executor's reactor turning after the drops: a close
                    // glommio had queued for the lent fd would run now, and hit the
                    // sentinel that reuses its number.
                    wait_sentinel.recv().unwrap();
                    for _ in 0..5 {
                        glommio::timer::sleep(std::time::Duration::from_millis(2)).await;
                    }
                    borrower_idle.send(()).unwrap();
                })
            })
        };

        // Blocking here is fine: the borrower needs nothing from this executor.
        wait_reads.recv().unwrap();
        assert_eq!(
            ring_reads(),
            (0, 0),
            "the owner's executor did none of the borrower's reads"
        );
        let mut close = pin!(file.close());
        assert!(
            poll_once(&mut close).await.is_pending(),
            "three borrowed files hold loans: close must wait"
        );
        assert_eq!(fds_naming(&path), 1);
        release.send(()).unwrap();
        close.await.unwrap();
        assert!(
            borrower_dropping.load(Ordering::SeqCst),
            "close resolved only once the borrower was dropping its files"
        );
        (borrower, lent_fd)
    });
    assert_eq!(fds_naming(&path), 0, "closed");

    // Put a sentinel file at the lent number (free now: F_DUPFD takes the lowest
    // free number from there). Nothing may close it behind us.
    let sentinel_path = dir.join("sentinel");
    write_tagged(&sentinel_path, 22, 1);
    let opened = std::fs::File::open(&sentinel_path).unwrap();
    let number =
        nix::fcntl::fcntl(&opened, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(lent_fd)).unwrap();
    assert_eq!(number, lent_fd, "the lent number is free again");
    // SAFETY: F_DUPFD_CLOEXEC just made `number`, owned by nothing else.
    let sentinel = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(number) };
    drop(opened);
    sentinel_open.send(()).unwrap();
    wait_borrower_idle.recv().unwrap();
    borrower.join().unwrap();
    assert_eq!(
        identity(&sentinel),
        path_identity(&sentinel_path),
        "the reused number still names the sentinel: the lent fd was closed once"
    );
    assert_eq!(fds_naming(&path), 0);
}

#[test]
fn dropping_unfinished_reads_and_streams_returns_the_loan() {
    let _serial = one_at_a_time();
    let dir = disk_dir("borrowed-cancel");
    let path = dir.join("data");
    write_tagged(&path, 23, BLOCKS);
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        let loan = file.loan().unwrap();
        let borrower = thread::spawn(move || {
            run(async move {
                let borrowed = BorrowedDmaFile::new(loan).await.unwrap();
                {
                    // Polled once (queued or in the kernel), then dropped.
                    let mut read = pin!(borrowed.read_at(0, 16 * BLOCK));
                    let _ = poll_once(&mut read).await;
                    let mut many = borrowed.read_many(
                        futures_lite::stream::iter(vec![(0u64, 4096usize), (8192, 4096)]),
                        MergedBufferLimit::NoMerging,
                        ReadAmplificationLimit::NoAmplification,
                    );
                    let _ = poll_once(&mut many.next()).await;
                }
                assert!(borrowed.loan().is_current(), "still lent");
                // Completed reads still work after cancelled ones.
                let block = borrowed.read_at(BLOCK as u64, BLOCK).await.unwrap();
                assert_eq!(&block[..], &expected_block(23, 1)[..]);
            })
        });
        // Resolves only once the borrower is dropped, with its cancelled reads.
        file.close().await.unwrap();
        borrower.join().unwrap();
    });
    assert_eq!(fds_naming(&path), 0);
}

#[test]
fn a_buffered_fd_is_read_through_the_ring_and_its_flags_stay_untouched() {
    let _serial = one_at_a_time();
    let dir = disk_dir("borrowed-buffered");
    let path = dir.join("data");
    write_tagged(&path, 24, 4);
    let data = whole(24, 4);
    // A plain std file (no O_DIRECT), lent by a Lender on this thread.
    let lender = Lender::new(OwnedFd::from(std::fs::File::open(&path).unwrap())).unwrap();
    let loan = lender.loan().unwrap();
    let got = thread::spawn(move || {
        run(async move {
            let borrowed = BorrowedDmaFile::new(BorrowSource::Loan(loan))
                .await
                .unwrap();
            assert!(!borrowed.is_pollable());
            ring_reads();
            let got = borrowed.read_at(3, 10_000).await.unwrap().to_vec();
            assert_eq!(
                ring_reads(),
                (0, 1),
                "one read, on the executor's main ring"
            );
            assert!(!is_direct(&borrowed), "the owner's flags were not changed");
            got
        })
    })
    .join()
    .unwrap();
    assert_eq!(got, &data[3..10_003]);
    assert!(!is_direct(&lender));
    lender.close_wait().unwrap();
    assert_eq!(fds_naming(&path), 0);
}

#[test]
fn an_empty_lent_file_is_not_probed_and_leaves_the_thread_able_to_read() {
    let _serial = one_at_a_time();
    let dir = disk_dir("borrowed-empty");
    let empty = dir.join("empty");
    std::fs::File::create(&empty).unwrap();
    let full = dir.join("full");
    write_tagged(&full, 25, 2);
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&empty).await.unwrap()).unwrap();
        let loan = file.loan().unwrap();
        let full = full.clone();
        let borrower = thread::spawn(move || {
            // No primer: the empty borrowed file is this thread's first on the disk.
            executor().run(async move {
                let borrowed = BorrowedDmaFile::new(loan).await.unwrap();
                assert!(!borrowed.is_pollable(), "empty: main ring, no probe");
                assert!(borrowed.read_at(0, BLOCK).await.unwrap().is_empty());
                drop(borrowed);
                read_first_block(&full).await
            })
        });
        file.close().await.unwrap();
        assert_eq!(borrower.join().unwrap(), expected_block(25, 0));
    });
}

/// The first block of `path` through a fresh `DmaFile` on this thread.
async fn read_first_block(path: &Path) -> Vec<u8> {
    let file = DmaFile::open(path).await.unwrap();
    let block = file.read_at(0, BLOCK).await.unwrap().to_vec();
    file.close().await.unwrap();
    block
}

#[test]
fn a_loan_of_a_pipe_is_refused_and_comes_back_intact() {
    let _serial = one_at_a_time();
    let (reader, writer) = nix::unistd::pipe().unwrap();
    let lender = Lender::new(reader).unwrap();
    let loan = lender.loan().unwrap();
    let lent_fd = loan.as_raw_fd();
    let loan = run(async move {
        let refused = BorrowedDmaFile::new(loan).await.unwrap_err();
        assert!(
            matches!(refused.error(), glommio::GlommioError::IoError(e) if e.kind() == std::io::ErrorKind::InvalidInput),
            "{refused}"
        );
        match refused.into_source() {
            BorrowSource::Loan(loan) => loan,
            other => panic!("came back as {other:?}"),
        }
    });
    assert_eq!(loan.as_raw_fd(), lent_fd);
    // The loan still reads the pipe.
    nix::unistd::write(&writer, b"still lent").unwrap();
    let mut buf = [0u8; 10];
    assert_eq!(nix::unistd::read(&loan, &mut buf).unwrap(), 10);
    assert_eq!(&buf, b"still lent");
    drop(loan);
    lender.close_wait().unwrap();
}

#[test]
fn reads_whose_range_overflows_are_refused_with_invalid_input_not_a_panic() {
    let _serial = one_at_a_time();
    let dir = disk_dir("borrowed-overflow");
    let path = dir.join("data");
    write_tagged(&path, 23, 4);
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        let borrowed = BorrowedDmaFile::new(file.loan().unwrap()).await.unwrap();
        for (pos, size) in [(1, usize::MAX), (u64::MAX, 1), (i64::MAX as u64, 1)] {
            let error = borrowed.read_at(pos, size).await.unwrap_err();
            let error = std::io::Error::from(error);
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::InvalidInput,
                "read_at({pos}, {size})"
            );
        }
        for (pos, size) in [(0, usize::MAX), (!4095, BLOCK)] {
            let error = borrowed.read_at_aligned(pos, size).await.unwrap_err();
            let error = std::io::Error::from(error);
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::InvalidInput,
                "aligned({pos}, {size})"
            );
        }
        // read_many: the iovecs before the overflowing one, then the error, then
        // the end.
        let iovs = futures_lite::stream::iter(vec![(0u64, BLOCK), (1, usize::MAX), (0, BLOCK)]);
        let mut results = borrowed.read_many(
            iovs,
            MergedBufferLimit::NoMerging,
            ReadAmplificationLimit::NoAmplification,
        );
        let ((pos, _), first) = results.next().await.unwrap().unwrap();
        assert_eq!((pos, &first[..]), (0, &expected_block(23, 0)[..]));
        let error = std::io::Error::from(results.next().await.unwrap().unwrap_err());
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(results.next().await.is_none());
        drop(results);
        // The file still reads after the refusals.
        let block = borrowed.read_at(BLOCK as u64, BLOCK).await.unwrap();
        assert_eq!(&block[..], &expected_block(23, 1)[..]);
        drop(borrowed);
        file.close().await.unwrap();
    });
}
