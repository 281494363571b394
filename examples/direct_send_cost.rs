//! What one send of a 64 KiB range costs, side by side in one run: an unaligned range
//! of an O_DIRECT file (the glommio case), an aligned one, and the same unaligned range
//! of a page-cache fd of the same file; and the unaligned one by the copy path alone. Run it under `strace -c -f` to count syscalls
//! per send (the reader thread only calls `read`).
//!
//! ```sh
//! cargo run --release --example direct_send_cost -- [SENDS] [CASE|all] [LEN]
//! strace -c -f target/release/examples/direct_send_cost 2000 unaligned  # one case only
//! # CASE: unaligned, copied, aligned, cached or all; LEN: bytes per send (64 KiB)
//! ```

use fdlend::io::{LentRegion, SendPath, SendProgress};
use fdlend::Lender;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Instant;

const FILE_LEN: u64 = 16 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sends: u64 = match std::env::args().nth(1) {
        Some(arg) => arg
            .parse()
            .map_err(|_| format!("SENDS must be a number, got {arg:?}"))?,
        None => 2000,
    };
    // One case only (`unaligned`, `aligned`, `cached`), for counting its syscalls.
    let only = std::env::args().nth(2).filter(|case| case != "all");
    let send_len: u64 = match std::env::args().nth(3) {
        Some(arg) => arg
            .parse()
            .map_err(|_| format!("LEN must be a number, got {arg:?}"))?,
        None => 64 * 1024,
    };
    if send_len == 0 || send_len > FILE_LEN / 4 {
        return Err(format!("LEN must be 1..={}", FILE_LEN / 4).into());
    }
    let path = std::env::temp_dir().join(format!("fdlend-send-cost-{}", std::process::id()));
    let bytes: Vec<u8> = (0..FILE_LEN).map(|i| ((i * 31) ^ (i >> 9)) as u8).collect();
    File::create(&path)?.write_all(&bytes)?;
    let direct = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)?;
    let buffered = File::open(&path)?;
    std::fs::remove_file(&path)?;

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    let reader = std::thread::spawn(move || drain(client));

    let direct = Lender::try_from(direct)?;
    let buffered = Lender::try_from(buffered)?;
    let sendfile = SendPath::Sendfile;
    let copy = SendPath::ReadWrite;
    let cases: [(&str, &str, &Lender, u64, SendPath); 6] = [
        (
            "unaligned",
            "O_DIRECT, unaligned (offset +77)",
            &direct,
            77,
            sendfile,
        ),
        (
            "spliced",
            "O_DIRECT, unaligned, from splice",
            &direct,
            77,
            SendPath::Splice,
        ),
        (
            "aligned-copied",
            "O_DIRECT, aligned, copy path only",
            &direct,
            0,
            copy,
        ),
        (
            "copied",
            "O_DIRECT, unaligned, copy path only",
            &direct,
            77,
            copy,
        ),
        ("aligned", "O_DIRECT, aligned", &direct, 0, sendfile),
        (
            "cached",
            "page cache, unaligned (offset +77)",
            &buffered,
            77,
            sendfile,
        ),
    ];
    println!("{sends} sends of {send_len} bytes each, to a loopback TCP socket");
    let mut total = 0;
    let mut results = Vec::new();
    for (key, name, lender, skew, first) in cases {
        if only.as_deref().is_some_and(|only| only != key) {
            continue;
        }
        let mut paths = HashMap::new();
        let start = Instant::now();
        let cpu_start = thread_cpu_ns();
        for i in 0..sends {
            let offset = (i * send_len) % (FILE_LEN - 2 * send_len) + skew;
            let region = LentRegion::new(lender.loan()?, offset, send_len)?;
            match region.send_via(&server, first)? {
                SendProgress::Done { sent, path, .. } => {
                    total += sent;
                    *paths.entry(path).or_insert(0u64) += 1;
                }
                SendProgress::Blocked { .. } => return Err("a blocking socket blocked".into()),
            }
        }
        let per_send = start.elapsed().as_nanos() as f64 / sends as f64;
        let cpu_per_send = (thread_cpu_ns() - cpu_start) as f64 / sends as f64;
        results.push((name, per_send, cpu_per_send, paths));
    }
    let baseline = results.last().map_or(1.0, |last| last.1);
    println!(
        "{:<36} {:>12} {:>8} {:>14}  paths",
        "", "wall ns/send", "ratio", "sender CPU ns"
    );
    for (name, per_send, cpu_per_send, paths) in &results {
        let mut paths: Vec<(SendPath, u64)> = paths.iter().map(|(p, n)| (*p, *n)).collect();
        paths.sort_by_key(|(path, _)| *path as u8);
        println!(
            "{name:<36} {per_send:>12.0} {:>7.2}x {cpu_per_send:>14.0}  {paths:?}",
            per_send / baseline
        );
    }
    drop(server);
    let received = reader.join().map_err(|_| "reader panicked")??;
    assert_eq!(received, total, "the reader got every byte sent");
    direct.close_wait()?;
    buffered.close_wait()?;
    Ok(())
}

/// CPU time this thread has used: counts only the sender, not the reader or the disk.
fn thread_cpu_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write; the clock id is a constant Linux has.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

fn drain(mut from: TcpStream) -> std::io::Result<u64> {
    let mut buf = vec![0; 1 << 20];
    let mut total = 0;
    loop {
        match from.read(&mut buf)? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}
