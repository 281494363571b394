//! `BlockingReader`: a second glommio executor reads a lent `DmaFile`'s fd with
//! `pread` on its blocking pool (works with crates.io glommio), its executor keeps
//! running meanwhile, and the owner's close waits for the reads.
#![cfg(feature = "glommio")]

mod glommio_common;

use fdlend::glommio::{BlockingReader, LentDmaFile};
use glommio::io::DmaFile;
use glommio_common::*;
use std::cell::Cell;
use std::rc::Rc;
use std::thread;
use std::time::Duration;

const BLOCKS: usize = 16;

#[test]
fn another_executor_reads_lent_regions_on_its_blocking_pool_and_keeps_running() {
    let _serial = serial();
    let dir = disk_dir("blocking-read");
    let path = dir.join("data");
    write_tagged(&path, 31, BLOCKS);
    let before = fds_naming(&path);
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        let region = file.region(100, 5000).unwrap();
        let loan = file.loan().unwrap();
        let reader_path = path.clone();
        let reader = thread::spawn(move || {
            let path = reader_path;
            run(async move {
                let region = BlockingReader::new(region);
                let whole = BlockingReader::new(loan);
                // A task that counts executor turns while the reads run elsewhere.
                let turns = Rc::new(Cell::new(0u32));
                let stop = Rc::new(Cell::new(false));
                let ticker = {
                    let (turns, stop) = (Rc::clone(&turns), Rc::clone(&stop));
                    glommio::spawn_local(async move {
                        while !stop.get() {
                            turns.set(turns.get() + 1);
                            glommio::timer::sleep(Duration::from_micros(100)).await;
                        }
                    })
                };
                let bytes = region.read_region().await.unwrap();
                let expected: Vec<u8> = (0..2).flat_map(|i| expected_block(31, i)).collect();
                assert_eq!(bytes, expected[100..5100]);
                // Unaligned, crossing the end of file: short, no zero padding.
                let tail = whole
                    .read_at((BLOCKS * BLOCK - 10) as u64, 100)
                    .await
                    .unwrap();
                assert_eq!(tail, expected_block(31, BLOCKS - 1)[BLOCK - 10..]);
                for i in 0..200 {
                    let block = whole
                        .read_at((i % BLOCKS * BLOCK) as u64, BLOCK)
                        .await
                        .unwrap();
                    assert_eq!(block, expected_block(31, i % BLOCKS));
                }
                assert!(turns.get() > 0, "the executor ran other tasks meanwhile");
                stop.set(true);
                ticker.await;
                assert_eq!(fds_naming(&path), before + 1, "nothing opened");
            })
        });
        // The close waits for both readers' loans.
        file.close().await.unwrap();
        reader.join().unwrap();
        assert_eq!(fds_naming(&path), before);
    });
}

#[test]
fn reads_whose_range_overflows_are_refused_with_invalid_input_not_a_panic() {
    let _serial = serial();
    let dir = disk_dir("blocking-overflow");
    let path = dir.join("data");
    write_tagged(&path, 32, 2);
    run(async {
        let file = LentDmaFile::new(DmaFile::open(&path).await.unwrap()).unwrap();
        let reader = BlockingReader::new(file.loan().unwrap());
        for (pos, size) in [(1, usize::MAX), (u64::MAX, 1), (i64::MAX as u64, 1)] {
            let error = reader.read_at(pos, size).await.unwrap_err();
            assert_eq!(
                error.kind(),
                std::io::ErrorKind::InvalidInput,
                "read_at({pos}, {size})"
            );
        }
        // A huge read inside the offset range is sized by the file, not the request.
        let all = reader.read_at(0, isize::MAX as usize).await.unwrap();
        assert_eq!(all.len(), 2 * BLOCK);
        let past_end = reader.read_at(10 * BLOCK as u64, BLOCK).await.unwrap();
        assert!(past_end.is_empty());
        drop(reader);
        file.close().await.unwrap();
    });
}
