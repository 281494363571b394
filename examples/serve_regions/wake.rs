//! Waking a thread blocked in `poll(2)` from another thread: a socket pair whose
//! read end sits in the sleeper's poll set. (A channel alone cannot wake `poll`.)

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct Waker(Arc<UnixStream>);

/// The side the sleeper polls.
pub struct Wakeup(UnixStream);

/// A connected pair, both ends non-blocking.
pub fn pair() -> io::Result<(Waker, Wakeup)> {
    let (tx, rx) = UnixStream::pair()?;
    tx.set_nonblocking(true)?;
    rx.set_nonblocking(true)?;
    Ok((Waker(Arc::new(tx)), Wakeup(rx)))
}

impl Waker {
    /// Makes the `Wakeup` readable. A full buffer means a wakeup is already pending,
    /// which is as good.
    pub fn wake(&self) {
        let _ = (&*self.0).write(&[1]);
    }
}

impl Wakeup {
    /// Consumes pending wakeups so the next `poll` sleeps again.
    pub fn drain(&self) {
        let mut sink = [0; 64];
        while let Ok(n) = (&self.0).read(&mut sink) {
            if n == 0 {
                break;
            }
        }
    }
}

impl AsFd for Wakeup {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
