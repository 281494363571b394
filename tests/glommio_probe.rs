//! glommio #605 as documented in `fdlend::glommio`: the polled-I/O verdict is taken
//! at the first `DmaFile` a thread opens on a device and cached for that thread; an
//! empty first file fools it, and on a disk without poll queues every later read on
//! that thread fails with `EOPNOTSUPP`. Each case runs on its own thread, since the
//! verdict is per thread.
#![cfg(feature = "glommio")]

mod glommio_common;

use glommio::io::DmaFile;
use glommio_common::*;
use std::path::{Path, PathBuf};
use std::thread;

/// Whether the disk holding `path` has poll queues (`io_poll` = 1); glommio reads the
/// whole disk's entry (`major:0`), so does this.
fn disk_polls(path: &Path) -> bool {
    let dev = nix::sys::stat::stat(path).unwrap().st_dev;
    let major = nix::sys::stat::major(dev);
    let entry = format!("/sys/dev/block/{major}:0/queue/io_poll");
    std::fs::read_to_string(&entry)
        .map(|text| text.trim() == "1")
        .unwrap_or(false)
}

/// Opens `first`, then reads block 0 of `full` through a second `DmaFile`, on a
/// fresh thread and executor (no primer: the order of opens is the point).
fn read_after_opening_first(first: PathBuf, full: PathBuf) -> Result<Vec<u8>, Option<i32>> {
    thread::spawn(move || {
        executor().run(async move {
            let opened_first = DmaFile::open(&first).await.unwrap();
            let file = DmaFile::open(&full).await.unwrap();
            let result = file
                .read_at(0, BLOCK)
                .await
                .map(|block| block.to_vec())
                .map_err(|error| match error {
                    glommio::GlommioError::EnhancedIoError { source, .. } => source.raw_os_error(),
                    other => panic!("not an I/O error: {other}"),
                });
            file.close().await.unwrap();
            opened_first.close().await.unwrap();
            result
        })
    })
    .join()
    .unwrap()
}

#[test]
fn an_empty_first_file_makes_later_reads_on_the_thread_fail_a_non_empty_one_does_not() {
    let dir = disk_dir("probe");
    let empty = dir.join("empty");
    std::fs::File::create(&empty).unwrap();
    let full = dir.join("full");
    write_tagged(&full, 31, 2);

    // A non-empty first file: the probe's read reaches the disk, and reads work.
    assert_eq!(
        read_after_opening_first(full.clone(), full.clone()),
        Ok(expected_block(31, 0))
    );

    let after_empty = read_after_opening_first(empty, full.clone());
    if disk_polls(&full) {
        // Polled reads work on this disk: the fooled probe happens to be right.
        eprintln!("disk has poll queues; after an empty first file: {after_empty:?}");
        assert_eq!(after_empty, Ok(expected_block(31, 0)));
    } else {
        assert_eq!(
            after_empty,
            Err(Some(libc::EOPNOTSUPP)),
            "an empty first file fools glommio's probe (glommio #605)"
        );
        // The verdict is per thread: a fresh thread starting with a non-empty file
        // reads fine in the same process.
        assert_eq!(
            read_after_opening_first(full.clone(), full),
            Ok(expected_block(31, 0))
        );
    }
}
