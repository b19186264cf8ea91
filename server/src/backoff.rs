//! Capped exponential backoff with jitter, for reconnecting to Redis and
//! MongoDB and retrying failed writes: the delay doubles from `base` up to
//! `cap`, and each wait is drawn from [delay/2, delay] so that many pods
//! that lost the same dependency do not come back in lockstep.
//!
//! [`delay`] is the arithmetic, shared with connflood, whose clients
//! reconnect with the same doubling but spread *around* the delay
//! ([`Spread::Around`]: a mean equal to the delay, as a load generator's
//! pacing wants) where the server spreads *below* it ([`Spread::Below`]:
//! never longer than the cap, as an outage's retries want).

use std::time::{Duration, Instant};

/// How a wait is drawn around the doubled delay `d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// In [d/2, d]: never above the cap (the server's reconnections).
    Below,
    /// In [d/2, 3d/2): a mean of d (connflood's reconnecting clients).
    Around,
}

/// The wait after `failures` consecutive failures: `min` doubled per
/// failure up to `max`, spread as `spread` says with `unit`, a random
/// number in [0, 1).
pub fn delay(min: Duration, max: Duration, failures: u32, spread: Spread, unit: f64) -> Duration {
    let d = min.saturating_mul(1u32 << failures.min(20)).min(max);
    match spread {
        Spread::Below => {
            let half = d / 2;
            half + half.mul_f64(unit)
        }
        Spread::Around => d.mul_f64(0.5 + unit),
    }
}

/// Reconnection pacing for one dependency.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    /// Failures since the last success.
    failures: u32,
    /// Not before this instant.
    next_try: Option<Instant>,
    rng: u64,
}

impl Backoff {
    /// Starts at `base`, never waits longer than `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
        Backoff { base, cap, failures: 0, next_try: None, rng: seed | 1 }
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
        let wait = delay(self.base, self.cap, self.failures, Spread::Below, (self.rng % 1000) as f64 / 1000.0);
        self.next_try = Some(Instant::now() + wait);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// Records a success: the delay starts again from `base`.
    pub fn succeeded(&mut self) {
        self.failures = 0;
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

    #[test]
    fn the_two_spreads_bound_the_doubled_delay() {
        let (min, max) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(delay(min, max, 0, Spread::Below, 0.0), Duration::from_millis(50));
        assert_eq!(delay(min, max, 2, Spread::Below, 0.5), Duration::from_millis(300));
        assert!(delay(min, max, 1000, Spread::Below, 0.999_999) <= max);
        assert_eq!(delay(min, max, 0, Spread::Around, 0.5), Duration::from_millis(100));
        assert_eq!(delay(min, max, 9, Spread::Around, 0.0), Duration::from_millis(2500));
        assert!(delay(min, max, 1000, Spread::Around, 0.999_999) < max * 3 / 2);
    }
}
