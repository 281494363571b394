//! Each thread's spare pipe, for splicing a file into a destination that is not a
//! pipe: made once and reused, so a splice send costs no `pipe2` and no `close`, and
//! a thread holds at most one pipe (two fds) however many sends it makes.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::cell::Cell;
use std::os::fd::OwnedFd;

/// The size a pipe grows to for O_DIRECT sources: the default `pipe-max-size`, which
/// any user may ask for.
const BIG_PIPE: libc::c_int = 1 << 20;

/// Both ends of a pipe.
pub(super) struct Pipe {
    pub(super) read: OwnedFd,
    pub(super) write: OwnedFd,
    /// Grown to [`BIG_PIPE`] (or tried to: a refusal is not retried).
    grown: bool,
}

impl Pipe {
    /// Grows the pipe to 1 MiB, once. From an O_DIRECT file each file-to-pipe splice
    /// is one disk read of the pipe's free space, so the default 16 pages would mean a
    /// disk round trip per 64 KiB. The kernel charges a pipe's capacity to its user
    /// (`/proc/sys/fs/pipe-user-pages-soft`, 64 MiB by default, after which new pipes
    /// get 2 pages), so only threads that send O_DIRECT files grow theirs; a refusal
    /// (`EPERM` past that limit) keeps the default.
    pub(super) fn grow(&mut self) {
        if !self.grown {
            self.grown = true;
            let _ = nix::fcntl::fcntl(&self.write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(BIG_PIPE));
        }
    }
}

thread_local! {
    /// The spare, if this thread has spliced before and its last send left the pipe
    /// empty. Closed when the thread exits.
    static SPARE: Cell<Option<Pipe>> = const { Cell::new(None) };
}

/// This thread's spare pipe (empty), or a new one. `Err` only when none can be made,
/// e.g. `EMFILE`/`ENFILE` when the process or the system is out of fds: the caller
/// then sends another way.
pub(super) fn take() -> Result<Pipe, Errno> {
    if let Some(pipe) = SPARE.take() {
        return Ok(pipe);
    }
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    Ok(Pipe {
        read,
        write,
        grown: false,
    })
}

/// Keeps `pipe` for this thread's next splice. Only an empty pipe may be given back:
/// bytes left in one were read from some file for a send that stopped, and would
/// reach the next destination. (If a spare is already kept, the older one is closed,
/// so there is never more than one.)
pub(super) fn give_back_empty(pipe: Pipe) {
    SPARE.set(Some(pipe));
}

/// Closes this thread's spare pipe, if it has one: for a thread that is done sending
/// and wants its two fds back, or a test that counts fds. The next splice send on the
/// thread makes a new one.
pub fn release_thread_pipe() {
    drop(SPARE.take());
}
