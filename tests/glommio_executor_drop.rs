//! Dropping a glommio executor while lent `DmaFile`s still have loans out: the
//! loans keep working, and once they return nothing is left open. Its own binary,
//! because it counts every entry of `/proc/self/fd`.
#![cfg(feature = "glommio")]

mod glommio_common;

use fdlend::glommio::LentDmaFile;
use fdlend::Loan;
use glommio::io::DmaFile;
use glommio_common::*;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;

const BLOCKS: usize = 8;

#[test]
fn dropping_the_executor_with_loans_out_leaks_nothing_once_they_return() {
    let dir = disk_dir("executor-drop");
    let paths: Vec<PathBuf> = (0..3)
        .map(|id| {
            let path = dir.join(format!("file-{id}"));
            write_tagged(&path, id, BLOCKS);
            path
        })
        .collect();
    // glommio 0.9 itself leaves one eventfd open per executor it ever made (its
    // sleep notifier), fdlend or not: measure that, so the comparison below is of
    // what the lent files leave behind.
    let before_plain = open_fds();
    thread::spawn(|| executor().run(async {})).join().unwrap();
    let per_executor = leftovers(&before_plain, &open_fds());
    let baseline = open_fds();

    // The owner thread: an executor and three lent files, each abandoned a
    // different way, with their loans sent out before the executor goes away.
    let owner_paths = paths.clone();
    let loans: Vec<(Loan, u32)> = thread::spawn(move || {
        let (send, loans) = mpsc::channel();
        let executor = executor();
        let escaped = executor.run(async {
            prime_poll_probe().await;
            let mut files = Vec::new();
            for (id, path) in owner_paths.iter().enumerate() {
                let file = LentDmaFile::new(DmaFile::open(path).await.unwrap()).unwrap();
                send.send((file.loan().unwrap(), id as u32)).unwrap();
                files.push(file);
            }
            let escaped = files.pop().unwrap();
            let dropped = files.pop().unwrap();
            let closing = files.pop().unwrap();
            // 0: a close still waiting for its loan when the executor is dropped;
            // glommio leaks the task, and the thread's exit gives up its wait.
            glommio::spawn_local(closing.close()).detach();
            glommio::yield_if_needed().await;
            // 1: the wrapper dropped on the executor.
            drop(dropped);
            // 2: the wrapper outlives the executor.
            escaped
        });
        drop(executor);
        drop(escaped);
        drop(send);
        loans.iter().collect()
    })
    .join()
    .unwrap();

    for path in &paths {
        assert_eq!(fds_naming(path), 1, "{path:?}: kept open by its loan");
    }
    let readers: Vec<_> = loans
        .into_iter()
        .map(|(loan, id)| {
            thread::spawn(move || {
                let block = pread_direct(&loan, BLOCK as u64, BLOCK).unwrap();
                assert_eq!(block, expected_block(id, 1), "file {id}");
            })
        })
        .collect();
    for reader in readers {
        reader.join().unwrap();
    }
    for path in &paths {
        assert_eq!(fds_naming(path), 0, "{path:?}: closed by its last loan");
    }
    assert_eq!(
        leftovers(&baseline, &open_fds()),
        per_executor,
        "nothing left open beyond glommio's own per-executor leak"
    );
}

/// What `after` has open that `before` did not, by what it links to.
fn leftovers(before: &[(i32, PathBuf)], after: &[(i32, PathBuf)]) -> Vec<String> {
    let mut left: Vec<String> = after
        .iter()
        .filter(|entry| !before.contains(entry))
        .map(|(_, target)| target.display().to_string())
        .collect();
    left.sort();
    left
}
