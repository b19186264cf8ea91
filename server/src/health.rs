//! A dependency's health, as one thread sees it (Redis for the publisher,
//! the subscriber and the loader; MongoDB for the writer and the loader):
//! the one place that, on a failure, counts the error, sets the thread's
//! up-gauge to 0, backs off and logs the first failure of an outage, and,
//! on a success, sets the gauge to 1, resets the backoff and logs the
//! recovery — each state change logged once, whatever the error rate.
//!
//! The log lines are the caller's (they name the node, what is held, what
//! happens next); this type decides when they are written.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::metrics::Metrics;

/// Picks one counter (or gauge) out of the metrics.
pub type Counter<T> = fn(&Metrics) -> &T;

/// One dependency's state for one thread.
#[derive(Debug)]
pub struct DependencyHealth {
    backoff: Backoff,
    metrics: Arc<Metrics>,
    /// Counted at every [`failed`](Self::failed).
    errors: Counter<AtomicU64>,
    /// Set to 0 on a failure, 1 on a success.
    up: Option<Counter<AtomicI64>>,
    /// Logged (info) by the first success after a failure.
    recovered: Option<&'static str>,
}

impl DependencyHealth {
    /// Healthy until the first failure; `backoff` paces the retries and
    /// `errors` counts the failures.
    pub fn new(backoff: Backoff, metrics: Arc<Metrics>, errors: Counter<AtomicU64>) -> DependencyHealth {
        DependencyHealth { backoff, metrics, errors, up: None, recovered: None }
    }

    /// With an up-gauge.
    pub fn with_gauge(mut self, up: Counter<AtomicI64>) -> DependencyHealth {
        self.up = Some(up);
        self
    }

    /// With a line logged once the dependency answers again.
    pub fn with_recovery_log(mut self, line: &'static str) -> DependencyHealth {
        self.recovered = Some(line);
        self
    }

    /// Whether an attempt may be made now.
    pub fn ready(&self) -> bool {
        self.backoff.ready()
    }

    /// Whether the last attempt failed.
    pub fn failing(&self) -> bool {
        self.backoff.failing()
    }

    /// Time until an attempt may be made.
    pub fn remaining(&self) -> Duration {
        self.backoff.remaining()
    }

    /// A failure: counts the error, sets the gauge to 0 and backs off. If
    /// it is the first since the last success, logs the warning `say`
    /// writes, given the wait. Returns the wait.
    pub fn failed(&mut self, say: impl FnOnce(Duration) -> String) -> Duration {
        (self.errors)(&self.metrics).fetch_add(1, Relaxed);
        self.retry_later(say)
    }

    /// Like [`failed`](Self::failed) without counting an error: the
    /// dependency answered, but not with everything done (e.g. MongoDB
    /// refused some documents for now).
    pub fn retry_later(&mut self, say: impl FnOnce(Duration) -> String) -> Duration {
        if let Some(up) = self.up {
            up(&self.metrics).store(0, Relaxed);
        }
        let (wait, first) = self.backoff.failed_first();
        if first {
            // Built here, not inside the macro: once per outage, and the
            // decision does not depend on the log level.
            let line = say(wait);
            log::warn!("{line}");
        }
        wait
    }

    /// A success: sets the gauge to 1, resets the backoff, and logs the
    /// recovery line if it had been failing. Returns whether it had.
    pub fn ok(&mut self) -> bool {
        let was_failing = self.backoff.failing();
        if let (true, Some(line)) = (was_failing, self.recovered) {
            log::info!("{line}");
        }
        self.backoff.succeeded();
        if let Some(up) = self.up {
            up(&self.metrics).store(1, Relaxed);
        }
        was_failing
    }
}

/// An error as one log line.
pub fn one_line(e: &impl std::fmt::Display) -> String {
    let s = e.to_string().replace('\n', " ");
    if s.len() > 300 {
        format!("{}…", &s[..s.char_indices().take_while(|(i, _)| *i < 300).last().map_or(0, |(i, _)| i)])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> (DependencyHealth, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(1));
        let backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let h = DependencyHealth::new(backoff, metrics.clone(), |m| &m.backend.redis_errors)
            .with_gauge(|m| &m.backend.redis_publisher_up);
        (h, metrics)
    }

    #[test]
    fn failures_count_lower_the_gauge_and_speak_once_per_outage() {
        let (mut h, m) = health();
        assert!(!h.ok(), "healthy from the start");
        assert_eq!(m.backend.redis_publisher_up.load(Relaxed), 1);
        let mut said = Vec::new();
        for _ in 0..3 {
            let wait = h.failed(|w| {
                said.push(w);
                String::new()
            });
            assert!(wait <= Duration::from_millis(400));
        }
        assert_eq!(said.len(), 1, "logged once per outage");
        assert!(said[0] >= Duration::from_millis(50) && said[0] <= Duration::from_millis(100));
        assert_eq!(m.backend.redis_errors.load(Relaxed), 3);
        assert_eq!(m.backend.redis_publisher_up.load(Relaxed), 0);
        assert!(h.failing() && !h.ready());
        assert!(h.ok(), "recovered");
        assert!(!h.failing() && h.ready());
        assert_eq!(m.backend.redis_publisher_up.load(Relaxed), 1);
        // A new outage speaks again; a retry_later does not count an error.
        h.retry_later(|_| {
            said.push(Duration::ZERO);
            String::new()
        });
        assert_eq!((said.len(), m.backend.redis_errors.load(Relaxed)), (2, 3));
    }

    #[test]
    fn long_errors_are_cut_to_one_line() {
        assert_eq!(one_line(&"a\nb"), "a b");
        let long = "é".repeat(400);
        let cut = one_line(&long);
        assert!(cut.ends_with('…') && cut.len() <= 304, "{}", cut.len());
    }
}
