//! What one run of one mode measured, and how two runs of a mode add up.

use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Dup,
    Lend,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Dup => "dup()",
            Mode::Lend => "fdlend",
        }
    }
}

/// The latency vectors are in ns and kept sorted, for `report::percentile`.
pub struct RunResult {
    pub mode: Mode,
    pub seconds: f64,
    pub reads: u64,
    pub handed: u64,
    pub refused: u64,
    /// The executor thread's CPU clock over the run.
    pub owner_cpu: Duration,
    pub process_cpu: Duration,
    pub peak_fds_in_flight: u64,
    pub sent_bytes: u64,
    pub handoff_ns: Vec<u64>,
    pub handle_ns: Vec<u64>,
    /// Every worker thread's CPU clock over its whole life (it lives for one run).
    pub worker_cpu: Duration,
    pub peak_in_flight: u64,
    pub end_to_end_ns: Vec<u64>,
    pub read_errors: u64,
    pub close_wait: Option<(Duration, usize)>,
}

impl RunResult {
    /// Folds another run of the same mode into this one.
    pub fn absorb(&mut self, other: RunResult) {
        debug_assert_eq!(self.mode, other.mode);
        self.seconds += other.seconds;
        self.reads += other.reads;
        self.handed += other.handed;
        self.refused += other.refused;
        self.owner_cpu += other.owner_cpu;
        self.process_cpu += other.process_cpu;
        self.worker_cpu += other.worker_cpu;
        self.peak_fds_in_flight = self.peak_fds_in_flight.max(other.peak_fds_in_flight);
        self.peak_in_flight = self.peak_in_flight.max(other.peak_in_flight);
        for (mine, theirs) in [
            (&mut self.handoff_ns, other.handoff_ns),
            (&mut self.handle_ns, other.handle_ns),
            (&mut self.end_to_end_ns, other.end_to_end_ns),
        ] {
            mine.extend(theirs);
            mine.sort_unstable();
        }
        self.read_errors += other.read_errors;
        self.sent_bytes += other.sent_bytes;
        self.close_wait = self.close_wait.max(other.close_wait);
    }
}
