//! SIGINT and SIGTERM as a file descriptor the owner's `poll` watches, so a signal
//! starts a graceful stop on the owner thread instead of killing the process
//! mid-send. No signal handler runs, so nothing here needs to be async-signal-safe.

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

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

/// The name of the signal that arrived, if one did.
pub fn received(signals: &SignalFd) -> Option<String> {
    let info = signals.read_signal().ok()??;
    let signal = Signal::try_from(i32::try_from(info.ssi_signo).ok()?).ok()?;
    Some(signal.as_str().to_owned())
}
