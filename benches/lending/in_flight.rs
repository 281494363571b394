//! The 200k-in-flight rows: what holding many handles at once costs in heap, kernel
//! fds and time, against `dup()` per hand-off, which the fd limit cuts short.

use crate::counting_alloc::tally;
use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// One line of the in-flight table: per-handle costs of `held` handles.
pub struct Memory {
    pub name: String,
    pub held: usize,
    pub bytes_per: f64,
    pub allocs_per: f64,
    pub fds_per: f64,
    pub ns_per: f64,
    pub note: String,
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The process's fds, heap tallies and clock before a batch of handles is made.
struct Before {
    fds: usize,
    bytes: usize,
    allocs: usize,
    start: Instant,
}

/// What a batch added: time, heap bytes, allocation calls, kernel fds.
struct Added {
    took: Duration,
    bytes: usize,
    allocs: usize,
    fds: usize,
}

impl Before {
    fn now() -> Before {
        // fds first: reading `/proc/self/fd` allocates, and that must not count.
        let fds = open_fds();
        let (bytes, allocs) = tally();
        Before {
            fds,
            bytes,
            allocs,
            start: Instant::now(),
        }
    }

    /// Call while the batch is still held.
    fn added(self) -> Added {
        let took = self.start.elapsed();
        let (bytes, allocs) = tally();
        Added {
            took,
            bytes: bytes - self.bytes,
            allocs: allocs - self.allocs,
            fds: open_fds().saturating_sub(self.fds),
        }
    }
}

impl Memory {
    fn new(name: &str, count: usize, added: &Added, note: String) -> Memory {
        Memory {
            name: name.to_owned(),
            held: count,
            bytes_per: added.bytes as f64 / count as f64,
            allocs_per: added.allocs as f64 / count as f64,
            fds_per: added.fds as f64 / count as f64,
            ns_per: added.took.as_nanos() as f64 / count as f64,
            note,
        }
    }
}

/// Makes and holds `count` handles with `make`; their cost per handle.
pub fn in_flight_cost<T>(name: &str, count: usize, make: impl Fn() -> T) -> Memory {
    let before = Before::now();
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        held.push(make());
    }
    let added = before.added();
    black_box(&held);
    drop(held);
    // The one allocation is the `Vec` holding them.
    let note = if added.allocs <= 1 {
        format!(
            "no allocation: the {} B `Vec` slot is all",
            std::mem::size_of::<T>()
        )
    } else {
        String::new()
    };
    let memory = Memory::new(name, count, &added, note);
    eprintln!(
        "  {}: {:.1} B, {:.4} allocs, {:.4} fds, {:.1} ns per handle",
        memory.name, memory.bytes_per, memory.allocs_per, memory.fds_per, memory.ns_per
    );
    memory
}

/// `dup` until 200k are held or the fd limit refuses; reports how far it got.
pub fn dup_in_flight(fd: &impl AsRawFd, wanted: usize) -> Memory {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(0);
    let before = Before::now();
    // Stop short of the limit: counting `/proc/self/fd` needs an fd itself.
    let room = (limit as usize).saturating_sub(before.fds + 64);
    let mut held: Vec<OwnedFd> = Vec::with_capacity(wanted.min(room));
    let mut refused = None;
    for _ in 0..wanted.min(room) {
        // SAFETY: dup of an fd this process holds open; owned below.
        let copy = unsafe { libc::dup(fd.as_raw_fd()) };
        if copy < 0 {
            refused = Some(std::io::Error::last_os_error());
            break;
        }
        // SAFETY: `copy` is a fresh fd nothing else owns.
        held.push(unsafe { OwnedFd::from_raw_fd(copy) });
    }
    let added = before.added();
    let count = held.len().max(1);
    drop(held);
    let note = match refused {
        Some(error) => format!("refused after {count}: {error}"),
        None if count < wanted => {
            format!("**{wanted} cannot be held here**: `ulimit -n` is {limit}; measured at {count}")
        }
        None => "one kernel fd each".to_owned(),
    };
    let memory = Memory::new("`dup()` per hand-off", count, &added, note);
    eprintln!(
        "  {}: {} held, {:.1} B, {:.4} allocs, {:.4} fds, {:.1} ns per handle ({})",
        memory.name,
        memory.held,
        memory.bytes_per,
        memory.allocs_per,
        memory.fds_per,
        memory.ns_per,
        memory.note
    );
    memory
}
