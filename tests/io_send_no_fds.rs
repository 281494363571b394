//! Sends when the process has no fd to spare, the situation fdlend exists for: with
//! `RLIMIT_NOFILE` lowered and every fd below it taken, sends into sockets and pipes
//! made beforehand must still complete with the right bytes, whether the source is
//! O_DIRECT (unaligned or aligned) or buffered, and whichever path they start on.
//!
//! Rlimits are process-wide, so the one test re-runs this binary as a child with
//! [`CHILD`] set and does the work there.

mod io_common;

use fdlend::io::{
    release_thread_pipe, DirectAlignment, LentRegion, PathBytes, SendPath, SendProgress,
};
use fdlend::Lender;
use io_common::pattern;
use nix::errno::Errno;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::thread::JoinHandle;

/// Set in the child's environment.
const CHILD: &str = "FDLEND_IO_SEND_NO_FDS_CHILD";
const TEST: &str = "sends_complete_with_every_fd_used_up";
const FILE_LEN: usize = 4 << 20;

#[test]
fn sends_complete_with_every_fd_used_up() {
    if std::env::var_os(CHILD).is_some() {
        return in_child();
    }
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new(exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("child stdout:\n{stdout}");
    println!("child stderr:\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "the child failed: {}",
        output.status
    );
    assert!(
        stdout.contains("all sends completed with no fd to spare"),
        "the child did not run the sends"
    );
}

/// A file on /tmp (ext4 here, so O_DIRECT works), unlinked once opened.
struct Source {
    bytes: Vec<u8>,
    direct: Option<Lender>,
    buffered: Lender,
}

fn source() -> Source {
    let bytes = pattern(FILE_LEN);
    let path: PathBuf = std::env::temp_dir().join(format!("fdlend-no-fds-{}", std::process::id()));
    File::create(&path).unwrap().write_all(&bytes).unwrap();
    let direct = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path);
    let buffered = Lender::try_from(File::open(&path).unwrap()).unwrap();
    std::fs::remove_file(&path).unwrap();
    let direct = match direct {
        Ok(file) => Some(Lender::try_from(file).unwrap()),
        Err(error) => {
            println!(
                "SKIP O_DIRECT cases: {} refuses it: {error}",
                path.display()
            );
            None
        }
    };
    Source {
        bytes,
        direct,
        buffered,
    }
}

/// A destination made while fds were still to be had, and the thread reading it.
struct Destination {
    kind: &'static str,
    write: File,
    reader: JoinHandle<Vec<u8>>,
}

fn destination(kind: &'static str) -> Destination {
    let (read, write): (Box<dyn Read + Send>, File) = if kind == "socket" {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        (
            Box::new(client),
            File::from(std::os::fd::OwnedFd::from(server)),
        )
    } else {
        let (read, write) = nix::unistd::pipe().unwrap();
        (Box::new(File::from(read)), File::from(write))
    };
    let reader = std::thread::spawn(move || {
        let mut read = read;
        let mut all = Vec::new();
        read.read_to_end(&mut all).unwrap();
        all
    });
    Destination {
        kind,
        write,
        reader,
    }
}

/// Lowers the soft fd limit to a little above the fds open now and opens
/// `/dev/null` until the kernel says `EMFILE`. Returns what it opened.
fn use_up_fds() -> Vec<File> {
    let highest = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u64>().ok())
        .max()
        .unwrap();
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        highest + 16,
        hard,
    )
    .unwrap();
    fill_fds()
}

fn fill_fds() -> Vec<File> {
    let mut taken = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(file) => taken.push(file),
            Err(error) if error.raw_os_error() == Some(libc::EMFILE) => break,
            Err(error) => panic!("opening /dev/null: {error}"),
        }
    }
    assert_eq!(
        nix::unistd::pipe().map(drop),
        Err(Errno::EMFILE),
        "no fd is left for a pipe"
    );
    taken
}

/// One send case: a range of one source, the path to start on, where it goes.
struct Case {
    name: &'static str,
    lender_direct: bool,
    offset: u64,
    len: u64,
    first: SendPath,
    to: Destination,
}

fn in_child() {
    let source = source();
    let mut cases = Vec::new();
    for kind in ["socket", "pipe"] {
        for first in [SendPath::Sendfile, SendPath::Splice] {
            let ranges: &[(&str, bool, u64, u64)] = &[
                ("O_DIRECT unaligned, one read", true, 77, 64 * 1024),
                ("O_DIRECT unaligned, split", true, 4096 + 77, 3 << 20),
                ("O_DIRECT aligned", true, 8192, 2 << 20),
                ("buffered unaligned", false, 77, 3 << 20),
            ];
            for &(name, lender_direct, offset, len) in ranges {
                if lender_direct && source.direct.is_none() {
                    continue;
                }
                cases.push(Case {
                    name,
                    lender_direct,
                    offset,
                    len,
                    first,
                    to: destination(kind),
                });
            }
        }
    }
    let spare_check = destination("socket");
    // This thread's spare pipe is made now, while fds are to be had...
    let warm_up = destination("socket");
    send(&source.buffered, 0, 4096, SendPath::Splice, &warm_up.write);
    finish(warm_up, &source.bytes[..4096]);

    let mut taken = use_up_fds();
    println!("fds used up: {} opened, pipe2 says EMFILE", taken.len());

    // ...so a splice into a socket still runs through it.
    let by_path = send(
        &source.buffered,
        5,
        100_000,
        SendPath::Splice,
        &spare_check.write,
    );
    assert_eq!(
        by_path.get(SendPath::Splice),
        100_000,
        "the spare pipe served"
    );
    finish(spare_check, &source.bytes[5..100_005]);
    // Without it, nothing can make a pipe: the sends below must do without.
    release_thread_pipe();

    let unit = source
        .direct
        .as_ref()
        .map(|lender| u64::from(DirectAlignment::of(lender).unwrap().offset));
    for case in cases {
        let lender = if case.lender_direct {
            source.direct.as_ref().unwrap()
        } else {
            &source.buffered
        };
        // The last case's finished destination gave back fds: take them again.
        taken.extend(fill_fds());
        let by_path = send(lender, case.offset, case.len, case.first, &case.to.write);
        let label = format!(
            "{} {}+{} from {:?} to a {}: {by_path:?}",
            case.name, case.offset, case.len, case.first, case.to.kind
        );
        println!("{label}");
        let total: u64 = [SendPath::Sendfile, SendPath::Splice, SendPath::ReadWrite]
            .into_iter()
            .map(|path| by_path.get(path))
            .sum();
        assert_eq!(total, case.len, "{label}");
        if case.to.kind == "socket" {
            assert_eq!(
                by_path.get(SendPath::Splice),
                0,
                "no pipe to splice through: {label}"
            );
        }
        if case.name == "O_DIRECT unaligned, split" && case.first == SendPath::Sendfile {
            let unit = unit.unwrap();
            let head = unit - case.offset % unit;
            let tail = (case.offset + case.len) % unit;
            assert_eq!(
                by_path.get(SendPath::ReadWrite),
                head + tail,
                "edges copied: {label}"
            );
        }
        let (start, end) = (case.offset as usize, (case.offset + case.len) as usize);
        finish(case.to, &source.bytes[start..end]);
    }
    drop(taken);
    for lender in source.direct.into_iter().chain([source.buffered]) {
        assert_eq!(lender.outstanding(), 0, "every send returned its loan");
        lender.close_wait().unwrap();
    }
    println!("all sends completed with no fd to spare");
}

/// Sends `len` bytes from `offset` (blocking destination: all or a panic).
fn send(lender: &Lender, offset: u64, len: u64, first: SendPath, out: &File) -> PathBytes {
    let region = LentRegion::new(lender.loan().unwrap(), offset, len).unwrap();
    match region.send_via(out, first) {
        Ok(SendProgress::Done { sent, by_path, .. }) => {
            assert_eq!(sent, len);
            by_path
        }
        other => panic!(
            "send of {offset}+{len} from {first:?} into fd {}: {other:?}",
            out.as_raw_fd()
        ),
    }
}

/// Closes the destination and checks what its reader got.
fn finish(to: Destination, expected: &[u8]) {
    drop(to.write);
    let got = to.reader.join().unwrap();
    assert!(
        got == expected,
        "a {} got {} bytes, the wrong ones",
        to.kind,
        got.len()
    );
}
