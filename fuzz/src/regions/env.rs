//! The file every input reads, made once per process: pseudo-random bytes on a real
//! disk (tmpfs refuses O_DIRECT), opened three times — a plain fd for the reference
//! `pread`s, and a buffered and an O_DIRECT fd, each lent by its own `Lender` — and
//! unlinked at once, so a crashed run leaves nothing behind.

use super::Fd;
use fdlend::io::{is_direct, AlignedBuf, AlignmentSource, DirectAlignment};
use fdlend::Lender;
use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

/// The file's length: 1 MiB and a partial block, so end of file falls inside an
/// O_DIRECT block and whole-file reads pass the 1 MiB bounce buffer of widened reads.
pub const FILE_LEN: u64 = (1 << 20) + 1717;
/// Each lender's loan limit: low, so splits and chunks reach `Saturated`, which also
/// bounds how many regions an input holds.
pub const MAX_LOANS: u32 = 16;
/// The largest caller buffer: the whole file and a few blocks more.
pub const BUF_MAX: usize = FILE_LEN as usize + 3 * 4096;
/// See [`Env::sink`].
const SINK_CAPACITY: usize = (2 << 20) + 4096;
/// How far into the aligned buffer a caller's buffer may start.
pub const BUF_SHIFT: usize = 8192;

pub struct Env {
    /// Not lent: the oracle.
    reference: File,
    /// Indexed by [`Fd`].
    lenders: [Lender; 2],
    raw: [RawFd; 2],
    /// What statx reports for the O_DIRECT fd.
    pub align: DirectAlignment,
    /// Callers' buffers are sub-slices of this (page-aligned, one guard byte past
    /// the largest buffer at the largest shift).
    pub buf: RefCell<AlignedBuf>,
    /// Reused, so that no input maps and faults in a megabyte per check (large
    /// allocations under ASan are fresh mappings).
    scratch: RefCell<Vec<u8>>,
    /// Where `read_to_end` and sends put the region's bytes: room for the most
    /// `read_to_end` may grow to (a prefix and two 1 MiB steps), also reused.
    pub sink: RefCell<Vec<u8>>,
}

impl Env {
    /// Makes the file in `$FDLEND_FUZZ_DIR`, or `/var/tmp`.
    #[allow(clippy::new_without_default)] // one per process, made lazily
    pub fn new() -> Env {
        let dir =
            std::env::var_os("FDLEND_FUZZ_DIR").map_or(PathBuf::from("/var/tmp"), PathBuf::from);
        let fs = nix::sys::statfs::statfs(&dir).expect("statfs of the fuzz file's directory");
        assert!(
            fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC,
            "{} is tmpfs, which refuses O_DIRECT: set FDLEND_FUZZ_DIR to a disk directory",
            dir.display()
        );
        let path = dir.join(format!("fdlend-fuzz-regions-{}", std::process::id()));
        let mut writer = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create the fuzz file");
        writer.write_all(&content()).expect("write the fuzz file");
        // O_DIRECT reads then come from the disk, not from writeback they force.
        writer.sync_all().expect("fsync the fuzz file");
        let open = |direct: bool| {
            OpenOptions::new()
                .read(true)
                .custom_flags(if direct { libc::O_DIRECT } else { 0 })
                .open(&path)
                .expect("open the fuzz file")
        };
        let (reference, buffered, direct) = (open(false), open(false), open(true));
        std::fs::remove_file(&path).expect("unlink the fuzz file");
        drop(writer);

        let align = statx_dioalign(&direct);
        assert!(is_direct(&direct).unwrap() && !is_direct(&buffered).unwrap());
        assert_eq!(DirectAlignment::of(direct.as_fd()), Ok(align));
        let raw = [buffered.as_raw_fd(), direct.as_raw_fd()];
        let lend = |file: File| {
            Lender::with_max_loans(OwnedFd::from(file), MAX_LOANS).expect("lend the fuzz file")
        };
        let buf = AlignedBuf::new(BUF_SHIFT + BUF_MAX + 1, 4096).unwrap();
        Env {
            reference,
            lenders: [lend(buffered), lend(direct)],
            raw,
            align,
            buf: RefCell::new(buf),
            scratch: RefCell::new(vec![0; FILE_LEN as usize]),
            sink: RefCell::new(Vec::with_capacity(SINK_CAPACITY)),
        }
    }

    pub fn lender(&self, fd: Fd) -> &Lender {
        &self.lenders[fd.index()]
    }

    /// The fd number `Saturated` names.
    pub fn raw(&self, fd: Fd) -> RawFd {
        self.raw[fd.index()]
    }

    /// True when `bytes` are what a plain `pread` finds at `pos`, all of them
    /// inside the file.
    pub fn in_file_at(&self, pos: u64, bytes: &[u8]) -> bool {
        if bytes.is_empty() {
            return true;
        }
        if pos.saturating_add(bytes.len() as u64) > FILE_LEN {
            return false;
        }
        let mut scratch = self.scratch.borrow_mut();
        let expected = &mut scratch[..bytes.len()];
        self.reference
            .read_exact_at(expected, pos)
            .expect("reference pread");
        bytes == expected
    }
}

/// Bytes that tell every offset apart (xorshift), so a read from the wrong place
/// shows.
fn content() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..FILE_LEN)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// The alignment the kernel reports for `file`, which `DirectAlignment::of` and the
/// `Misaligned` errors must repeat.
fn statx_dioalign(file: &File) -> DirectAlignment {
    // SAFETY: `statx` is plain old data; all-zero is a valid value.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the empty path with AT_EMPTY_PATH describes the fd itself, open for the
    // call; `stx` is a valid, writable statx buffer.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    assert_eq!(rc, 0, "statx: {}", std::io::Error::last_os_error());
    assert!(
        stx.stx_mask & libc::STATX_DIOALIGN != 0 && stx.stx_dio_offset_align != 0,
        "the filesystem reports no O_DIRECT alignment: set FDLEND_FUZZ_DIR to one that does"
    );
    DirectAlignment {
        memory: stx.stx_dio_mem_align,
        offset: stx.stx_dio_offset_align,
        source: AlignmentSource::Statx,
    }
}
