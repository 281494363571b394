//! fdlend in one screen: lend one fd to three reader threads, ask for the close
//! while they still hold their loans, and watch the close wait for the last one.
//!
//! Run with `cargo run --example quickstart`.

use fdlend::Lender;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Barrier};

const TEXT: &[u8] = b"The quick brown fox jumps over the lazy dog";

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |entries| entries.count())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A real file on disk with known bytes. Unlinked at once: the open fd keeps the
    // data, and nothing is left behind even if this example panics.
    let path = std::env::temp_dir().join(format!("fdlend-quickstart-{}", std::process::id()));
    File::create(&path)?.write_all(TEXT)?;
    let file = File::open(&path)?;
    std::fs::remove_file(&path)?;

    let fd = file.as_raw_fd();
    let lender = Lender::try_from(file)?;
    let ticket = lender.ticket(); // holds nothing open; can be pinned later
    println!(
        "lent fd {fd}: {:?}; fds open: {}",
        String::from_utf8_lossy(TEXT),
        open_fds()
    );

    // Three loans of the same fd, no dup(). The readers wait at the barrier so the
    // close below is asked for while all three loans are still out.
    let start = Arc::new(Barrier::new(4));
    let readers: Vec<_> = [(4, 9), (16, 19), (40, 43)]
        .into_iter()
        .enumerate()
        .map(|(reader, (from, to))| {
            let loan = lender.loan()?;
            let start = Arc::clone(&start);
            Ok(std::thread::spawn(move || {
                start.wait();
                let mut buf = vec![0; to - from];
                let n = nix::sys::uio::pread(&loan, &mut buf, from as i64).expect("pread");
                println!(
                    "  reader {reader}: bytes {from}..{to} of fd {} = {:?}",
                    loan.as_raw_fd(),
                    String::from_utf8_lossy(&buf[..n])
                );
                // `loan` drops here; the last one to drop closes the fd.
            }))
        })
        .collect::<Result<_, fdlend::LendError>>()?;
    let (loans, fds) = (lender.outstanding(), open_fds());
    println!("loans out: {loans}; fds open: {fds} (the same: no dup per loan)");

    let closing = lender.close();
    println!(
        "close() asked for: closed yet? {} — fd {fd} stays open while loans are out \
         (fds open: {}, /proc/self/fd/{fd} exists: {})",
        closing.is_closed(),
        open_fds(),
        std::path::Path::new(&format!("/proc/self/fd/{fd}")).exists()
    );
    match ticket.pin() {
        Ok(_) => unreachable!("a closing file takes no new loans"),
        Err(refused) => println!("ticket.pin() while closing: {refused}"),
    }

    start.wait(); // let the readers go
    for reader in readers {
        reader.join().expect("reader thread");
    }

    println!(
        "all loans returned: close result {:?}, fds open: {}",
        closing.result().expect("the last loan closed the fd"),
        open_fds()
    );
    match ticket.pin() {
        Ok(_) => unreachable!("the file is closed"),
        Err(refused) => println!("ticket.pin() after the close: {refused}"),
    }
    Ok(())
}
