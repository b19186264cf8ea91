//! Write pacing: when a worker's flush passes grow long, they are spaced so
//! that writing takes at most a set share of the worker's time, and each
//! write carries more frames.
//!
//! Under fan-out load nearly all of a worker's CPU is the kernel's cost of a
//! `sendmsg` to a loopback or LAN socket (measured: ~6 µs per call, ~0.2 µs
//! per extra frame it carries, docs/benchmarks.md). A pass over 2,000
//! members costs ~12 ms whether each carries one frame or twenty, so how
//! many frames a write carries decides the CPU per delivery. uWebSockets
//! writes once per socket per loop turn ("cork"); so does `before_sleep`.
//! When passes run back to back, that cork holds only what arrived during
//! the previous pass, and the worker saturates on write calls.
//!
//! The pacer starts a pass at most every `duration of the last pass ×
//! 100 / WRITE_DUTY_PERCENT`, capped at [`MAX_GAP`]. A short pass (a quiet
//! worker: a few µs) leaves no gap, so a lone message is written at once;
//! a 12 ms pass at a duty of 50 % is followed by at most 12 ms more of
//! reading and sequencing, during which output piles up for the next pass.
//! Latency grows by at most the gap, bounded by [`MAX_GAP`]; CPU per
//! delivery falls because writes carry more frames.
//!
//! Data flow: the worker asks [`FlushPacer::due`] before `before_sleep`'s
//! flush pass, reports the pass with [`FlushPacer::passed`], and sleeps at
//! most [`FlushPacer::wait`] while writes are pending.

use std::time::{Duration, Instant};

/// The longest gap between two passes the pacer imposes (a pass that
/// itself takes longer is followed at once by the next).
pub const MAX_GAP: Duration = Duration::from_millis(40);

/// When the next flush pass may start.
#[derive(Debug)]
pub struct FlushPacer {
    /// Percent of the worker's time flush passes may take (1–100; 100 =
    /// passes back to back, no pacing).
    duty_percent: u32,
    next_due: Instant,
}

impl FlushPacer {
    /// A pacer letting passes take `duty_percent` (clamped to 1–100) of the time.
    pub fn new(duty_percent: u32, now: Instant) -> FlushPacer {
        FlushPacer { duty_percent: duty_percent.clamp(1, 100), next_due: now }
    }

    /// Whether a flush pass may start at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_due
    }

    /// How long until a pass may start (zero when due).
    pub fn wait(&self, now: Instant) -> Duration {
        self.next_due.saturating_duration_since(now)
    }

    /// Records a pass that ran from `start` to `end`: the next may start
    /// `(end - start) × 100 / duty` after `start`, at most [`MAX_GAP`] after it
    /// and never before `end`.
    pub fn passed(&mut self, start: Instant, end: Instant) {
        let took = end.saturating_duration_since(start);
        let gap = (took * 100 / self.duty_percent).min(MAX_GAP).max(took);
        self.next_due = start + gap;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_short_pass_leaves_no_gap() {
        let t0 = Instant::now();
        let mut p = FlushPacer::new(50, t0);
        assert!(p.due(t0));
        p.passed(t0, t0 + Duration::from_micros(20));
        // 40 µs after the pass began the next may run: a lone message waits µs.
        assert!(!p.due(t0 + Duration::from_micros(30)));
        assert!(p.due(t0 + Duration::from_micros(40)));
    }

    #[test]
    fn a_long_pass_is_followed_by_a_gap_in_proportion_to_the_duty() {
        let t0 = Instant::now();
        let mut p = FlushPacer::new(50, t0);
        p.passed(t0, t0 + ms(12));
        assert_eq!(p.wait(t0 + ms(12)), ms(12)); // writing takes half the time
        let mut q = FlushPacer::new(25, t0);
        q.passed(t0, t0 + ms(8));
        assert_eq!(q.wait(t0 + ms(8)), ms(24)); // a quarter
    }

    #[test]
    fn the_gap_is_capped_and_a_pass_longer_than_the_cap_is_followed_at_once() {
        let t0 = Instant::now();
        let mut p = FlushPacer::new(10, t0);
        p.passed(t0, t0 + ms(30));
        assert_eq!(p.wait(t0 + ms(30)), MAX_GAP - ms(30));
        p.passed(t0, t0 + ms(60));
        assert!(p.due(t0 + ms(60)));
    }

    #[test]
    fn a_duty_of_100_percent_never_waits_after_a_pass() {
        let t0 = Instant::now();
        let mut p = FlushPacer::new(100, t0);
        p.passed(t0, t0 + ms(15));
        assert!(p.due(t0 + ms(15)));
        // Out-of-range duties are clamped, not divided by.
        let mut z = FlushPacer::new(0, t0);
        z.passed(t0, t0 + Duration::from_micros(10));
        assert_eq!(z.wait(t0), Duration::from_millis(1));
    }
}
