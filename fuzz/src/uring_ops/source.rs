//! One target of a `uring_ops` input: a memfd or a pipe, lent, with the pipe's
//! stream of bytes (counting mod 251, so a piece shows whether it is contiguous).

use super::Target;
use fdlend::io::uring::FixedFile;
use fdlend::Lender;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;

/// The memfd's length.
pub const FILE_LEN: usize = 16 * 1024;
/// The O_DIRECT file's length: five 4 KiB blocks and a ragged end.
pub const DIRECT_LEN: usize = 20_000;
/// Bytes a pipe may hold unread before `Write` refuses (under its 64 KiB capacity).
pub const PIPE_ROOM: u64 = 32 * 1024;
pub fn file_byte(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 7)) as u8
}

/// Pipe streams count mod 251, so a piece's bytes say whether it is contiguous.
pub fn stream_byte(i: u64) -> u8 {
    (i % 251) as u8
}

/// One target: its lender, the writer of a pipe, the fixed slot on the current ring.
pub struct Source {
    pub target: Target,
    pub lender: Lender,
    pub writer: Option<File>,
    pub written: u64,
    pub read: u64,
    pub fixed: Option<FixedFile>,
    /// Bytes dropped (abandoned) reads may still take; zero after a drain.
    pub abandoned_len: u64,
    /// A ring was dropped with its ops in flight: its loans leak, no exact count.
    pub tainted: bool,
}

impl Source {
    pub fn new(target: Target) -> Source {
        let (lender, writer) = match target {
            Target::File => {
                let fd = nix::sys::memfd::memfd_create(
                    "uring-ops",
                    nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
                )
                .unwrap();
                let mut file = File::from(fd);
                let bytes: Vec<u8> = (0..FILE_LEN).map(file_byte).collect();
                file.write_all(&bytes).unwrap();
                (Lender::try_from(file).unwrap(), None)
            }
            Target::Direct => (Lender::try_from(direct_file()).unwrap(), None),
            Target::PipeA | Target::PipeB => {
                let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
                (Lender::try_from(read).unwrap(), Some(File::from(write)))
            }
        };
        Source {
            target,
            lender,
            writer,
            written: 0,
            read: 0,
            fixed: None,
            abandoned_len: 0,
            tainted: false,
        }
    }

    /// The length of a file target.
    pub fn len(&self) -> usize {
        match self.target {
            Target::Direct => DIRECT_LEN,
            _ => FILE_LEN,
        }
    }

    /// Reads what no op took (a pipe's tail) and checks it ends the stream.
    /// Dropped reads took bytes the world never saw, so `read` may lag.
    pub fn read_tail(&mut self) {
        let loan = self.lender.loan().unwrap();
        let mut left: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int into `left`; the loan keeps the fd open.
        let rc = unsafe { libc::ioctl(loan.as_raw_fd(), libc::FIONREAD, &mut left) };
        assert_eq!(rc, 0);
        let left = left as u64;
        assert!(self.read + left <= self.written, "more unread than written");
        let mut tail = vec![0; left as usize];
        let mut got = 0;
        while got < tail.len() {
            got += nix::unistd::read(&loan, &mut tail[got..]).unwrap();
        }
        let want: Vec<u8> = (self.written - left..self.written)
            .map(stream_byte)
            .collect();
        assert!(tail == want, "the pipe's tail is not the stream's end");
        self.read = self.written;
    }
}

/// A fresh file of `DIRECT_LEN` bytes on disk (fuzz/target, not tmpfs), opened
/// O_DIRECT where the filesystem allows it, and unlinked at once.
fn direct_file() -> File {
    use std::os::unix::fs::OpenOptionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target"));
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!(
        "uring-ops-direct-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let bytes: Vec<u8> = (0..DIRECT_LEN).map(file_byte).collect();
    std::fs::write(&path, &bytes).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .or_else(|_| File::open(&path))
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    file
}
