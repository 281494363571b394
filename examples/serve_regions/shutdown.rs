//! SIGINT and SIGTERM as a file descriptor the owner's `poll` watches, so a signal
//! starts a graceful stop on the owner thread instead of killing the process
//! mid-send. No signal handler runs, so nothing here needs to be async-signal-safe.
//! The mask stays for the whole run and the fd is read once per signal, so a second
//! signal is seen too (it stops the server at once).

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::os::fd::AsFd;

/// An fd that turns readable when someone asks the server to stop.
pub trait StopSource: AsFd {
    /// Consumes one pending stop request and names it (`None` if none was pending
    /// after all).
    fn take_stop(&self) -> Option<String>;
}

/// Blocks SIGINT and SIGTERM on this thread and returns a signalfd that turns
/// readable when one arrives. Call it before starting any thread: threads inherit
/// the mask, so no thread takes the signal's default action (termination).
pub fn stop_signals() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGINT);
    mask.add(Signal::SIGTERM);
    mask.thread_block()?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
}

impl StopSource for SignalFd {
    /// The signal that arrived, by name (`SIGTERM`, `SIGINT`).
    fn take_stop(&self) -> Option<String> {
        let info = self.read_signal().ok()??;
        let signal = Signal::try_from(i32::try_from(info.ssi_signo).ok()?).ok()?;
        Some(signal.as_str().to_owned())
    }
}
