//! A lent `DmaFile`'s fd is closed by glommio, behind the ops glommio still has
//! queued for it, never by a `close(2)` that would let such an op land on the next
//! file to get the number.
#![cfg(feature = "glommio")]

mod glommio_common;

use fdlend::glommio::LentDmaFile;
use glommio::io::{DmaFile, OpenOptions};
use glommio_common::*;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BLOCKS: usize = 4;
const SCRIBBLE: u8 = 0xAB;

/// Polls a write of one block of `SCRIBBLE` at offset 0 once (glommio queues it in
/// its submission queue), then forgets the future: the op stays queued.
async fn forget_a_queued_write(dma: &DmaFile) {
    let mut buf = dma.alloc_dma_buffer(BLOCK);
    buf.as_bytes_mut().fill(SCRIBBLE);
    let mut write = Box::pin(dma.write_at(buf, 0));
    assert!(poll_once(&mut write).await.is_pending(), "queued, not done");
    std::mem::forget(write);
}

async fn open_rw(path: &Path) -> DmaFile {
    OpenOptions::new()
        .read(true)
        .write(true)
        .dma_open(path)
        .await
        .unwrap()
}

/// Lets glommio's reactor submit and reap what it has queued.
async fn let_the_executor_run() {
    for _ in 0..5 {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
}

fn assert_untouched(path: &Path, id: u32) {
    let bytes = std::fs::read(path).unwrap();
    for index in 0..BLOCKS {
        assert_eq!(
            &bytes[index * BLOCK..(index + 1) * BLOCK],
            &expected_block(id, index)[..],
            "{path:?} block {index} was written through a reused fd number"
        );
    }
}

#[test]
fn a_forgotten_write_never_lands_in_the_file_that_reuses_the_number() {
    let _serial = serial();
    let dir = disk_dir("close-order");
    let lent_path = dir.join("lent");
    let other_path = dir.join("other");
    write_tagged(&lent_path, 1, BLOCKS);
    write_tagged(&other_path, 2, BLOCKS);
    run(async {
        let lent = LentDmaFile::new(open_rw(&lent_path).await).unwrap();
        let number = lent.as_raw_fd();
        forget_a_queued_write(lent.dma()).await;
        drop(lent);
        // The lowest free number: the lent file's, had it been closed already.
        let other = std::fs::File::open(&other_path).unwrap();
        eprintln!(
            "lent fd {number}, next file got {} (same number: the old close(2) bug's setup)",
            other.as_raw_fd()
        );
        let_the_executor_run().await;
        drop(other);
        assert_eq!(fds_naming(&lent_path), 0, "glommio closed the lent fd");
    });
    assert_untouched(&other_path, 2);
    let written = std::fs::read(&lent_path).unwrap();
    assert!(
        written[..BLOCK].iter().all(|&byte| byte == SCRIBBLE),
        "the forgotten write went to its own file"
    );
}

#[test]
fn with_loans_out_the_close_waits_for_them_then_glommio_closes_behind_its_ops() {
    let _serial = serial();
    let dir = disk_dir("close-order-lent");
    let lent_path = dir.join("lent");
    let other_path = dir.join("other");
    write_tagged(&lent_path, 3, BLOCKS);
    write_tagged(&other_path, 4, BLOCKS);
    run(async {
        let lent = LentDmaFile::new(open_rw(&lent_path).await).unwrap();
        let loan = lent.loan().unwrap();
        let (go, wait) = mpsc::channel::<()>();
        let reader = thread::spawn(move || {
            wait.recv().unwrap();
            let block = pread_direct(&loan, BLOCK as u64, BLOCK).unwrap();
            drop(loan);
            block
        });
        forget_a_queued_write(lent.dma()).await;
        drop(lent);
        let other = std::fs::File::open(&other_path).unwrap();
        let_the_executor_run().await;
        assert_eq!(fds_naming(&lent_path), 1, "the loan keeps it open");
        go.send(()).unwrap();
        assert_eq!(reader.join().unwrap(), expected_block(3, 1));
        let_the_executor_run().await;
        assert_eq!(fds_naming(&lent_path), 0, "closed once the loan was back");
        drop(other);
    });
    assert_untouched(&other_path, 4);
}
