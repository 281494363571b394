//! What a finished server did, for its exit line and the tests.

use super::workers::Outcome;
use fdlend::io::SendPath;
use std::collections::HashMap;
use std::time::Duration;

/// What a finished server did.
#[derive(Debug, Default)]
pub struct Report {
    /// Connections accepted.
    pub connections: usize,
    /// Requests answered (any status).
    pub requests: usize,
    /// Bodies sent, by the path the kernel let `send_to` take.
    pub paths: HashMap<SendPath, usize>,
    /// Responses whose send failed (the client hung up or stopped reading).
    pub failed: usize,
    /// Idle connections closed to admit a new client at the connection cap.
    pub evicted: usize,
    /// The stop requests that came, in order (`SIGTERM`, `SIGINT`...); empty if the
    /// request limit stopped it. A second one stopped it at once.
    pub stops: Vec<String>,
    /// Sends cut by the stop (still running at the drain timeout or a second stop).
    pub cut: usize,
    /// From the first stop request until every send had ended or was cut.
    pub drained_in: Option<Duration>,
}

impl Report {
    /// Counts how one response's send ended.
    pub fn record(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Sent(path) => *self.paths.entry(path).or_default() += 1,
            Outcome::Headless => {}
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Cut => self.cut += 1,
        }
    }
}
