//! Capped exponential backoff with jitter, for reconnecting to Redis and
//! MongoDB and retrying failed writes: the delay doubles from `base` up to
//! `cap`, and each wait is drawn from [delay/2, delay] so that many pods
//! that lost the same dependency do not come back in lockstep.

use std::time::{Duration, Instant};

/// Reconnection pacing for one dependency.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    current: Duration,
    /// Not before this instant.
    next_try: Option<Instant>,
    rng: u64,
}

impl Backoff {
    /// Starts at `base`, never waits longer than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Backoff { base, cap, current: base, next_try: None, rng: seed | 1 }
    }

    /// Whether an attempt may be made now.
    pub fn ready(&self) -> bool {
        self.next_try.is_none_or(|t| Instant::now() >= t)
    }

    /// Whether the last attempt failed: it is failing since a `failed()`,
    /// until the next `succeeded()`. Callers log a dependency's state
    /// changes once each by asking this before recording the attempt.
    pub fn failing(&self) -> bool {
        self.next_try.is_some()
    }

    /// Time until an attempt may be made.
    pub fn remaining(&self) -> Duration {
        self.next_try.map_or(Duration::ZERO, |t| t.saturating_duration_since(Instant::now()))
    }

    /// [`Backoff::failed`], also saying whether this failure is the first
    /// since the last success (what callers log once per outage).
    pub fn failed_first(&mut self) -> (Duration, bool) {
        let first = !self.failing();
        (self.failed(), first)
    }

    /// Records a failure: the next attempt waits a jittered, doubled delay.
    /// Returns that wait.
    pub fn failed(&mut self) -> Duration {
        // xorshift64: jitter only, no need for a cryptographic source.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let half = self.current / 2;
        let wait = half + half.mul_f64((self.rng % 1000) as f64 / 1000.0);
        self.next_try = Some(Instant::now() + wait);
        self.current = (self.current * 2).min(self.cap);
        wait
    }

    /// Records a success: the delay starts again from `base`.
    pub fn succeeded(&mut self) {
        self.current = self.base;
        self.next_try = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
        assert!(b.ready() && !b.failing());
        let mut waits = Vec::new();
        for _ in 0..6 {
            waits.push(b.failed());
        }
        assert!(!b.ready() && b.failing());
        let bounds = [100, 200, 400, 800, 800, 800];
        for (w, max) in waits.iter().zip(bounds) {
            assert!(*w >= Duration::from_millis(max / 2) && *w <= Duration::from_millis(max), "{w:?} vs {max}");
        }
        b.succeeded();
        assert!(b.ready() && !b.failing());
        assert!(b.failed() <= Duration::from_millis(100));
    }
}
