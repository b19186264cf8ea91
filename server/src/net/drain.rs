//! The drain plan of one worker (SIGTERM): who is told to go away, and when.
//!
//! Data flow: on `ToWorker::Drain` the worker closes its public listener,
//! removes its idle HTTP connections, and makes a [`DrainPlan`] of its
//! open WebSocket connections ([`select`]). On every loop turn it asks the
//! plan which of them are [`due`](DrainPlan::due) and sends each the drain
//! notice and a 1001 close; [`next_in`](DrainPlan::next_in) gives the poll
//! timeout so no turn is late, and [`finished`](DrainPlan::finished) ends
//! the loop.
//!
//! The schedule spreads the closes evenly over `DRAIN_WINDOW_SECS`: by
//! `elapsed / window` of the window, that fraction of the targets (rounded
//! up) has been closed, so clients reconnect to the other pods gradually
//! rather than all at once. A zero window closes everyone at once.
//!
//! Invariants: `next` only grows and never passes `targets.len()`; each
//! target is handed out once. Targets are (key, id): a key may have been
//! reused by the time its turn comes, so the worker acts on a target only
//! if the connection at that key still has that id.

use std::time::{Duration, Instant};

use super::conn::{Conn, CLOSE_TIMEOUT_SECS};

/// Seconds beyond the window the worker waits for the last close
/// handshakes before it stops anyway (the close timeout and a margin).
const OVERDUE_SECS: u64 = CLOSE_TIMEOUT_SECS as u64 + 2;

/// Closing every connection over the drain window.
#[derive(Debug)]
pub struct DrainPlan {
    start: Instant,
    window: Duration,
    /// Connections to close, with their ids (keys may be reused meanwhile).
    targets: Vec<(usize, u64)>,
    /// How many of `targets` have been handed out.
    next: usize,
}

/// Who a drain concerns among `conns`: the WebSocket connections not yet
/// closing (to be closed over the window), and the HTTP connections idle
/// between requests (nothing queued, nothing half-read: removed at once).
/// Busy HTTP connections finish their exchange; keep-alive ends with it.
pub fn select<'a>(conns: impl Iterator<Item = (usize, &'a Conn)>) -> (Vec<(usize, u64)>, Vec<usize>) {
    let mut targets = Vec::new();
    let mut idle_http = Vec::new();
    for (key, c) in conns {
        match c.phase {
            super::conn::Phase::Ws { .. } if !c.close_sent() => targets.push((key, c.id)),
            super::conn::Phase::Http if c.out.is_empty() && c.inbuf.is_empty() => idle_http.push(key),
            _ => {}
        }
    }
    (targets, idle_http)
}

impl DrainPlan {
    /// A plan to close `targets` over `window`, starting at `start`.
    pub fn new(start: Instant, window: Duration, targets: Vec<(usize, u64)>) -> DrainPlan {
        DrainPlan { start, window, targets, next: 0 }
    }

    /// How many connections the plan closes.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether the plan closes no connection.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The targets whose turn has come by `now` and were not handed out yet.
    pub fn due(&mut self, now: Instant) -> &[(usize, u64)] {
        let total = self.targets.len();
        let due = if self.window.is_zero() {
            total
        } else {
            let frac = now.saturating_duration_since(self.start).as_secs_f64() / self.window.as_secs_f64();
            ((total as f64 * frac).ceil() as usize).min(total)
        };
        let from = self.next.min(due);
        self.next = self.next.max(due);
        &self.targets[from..due]
    }

    /// Time from `now` until the next target is due; `None` when all were handed out.
    pub fn next_in(&self, now: Instant) -> Option<Duration> {
        (self.next < self.targets.len()).then(|| {
            let due = self.window.mul_f64((self.next + 1) as f64 / self.targets.len() as f64);
            due.saturating_sub(now.saturating_duration_since(self.start))
        })
    }

    /// Whether the worker may stop: every target was handed out and no
    /// connection is left (`conns_left` false), or the close handshakes
    /// have overrun the window by the close timeout and a margin.
    pub fn finished(&self, now: Instant, conns_left: bool) -> bool {
        let done = self.next >= self.targets.len() && !conns_left;
        let overdue = now.saturating_duration_since(self.start) > self.window + Duration::from_secs(OVERDUE_SECS);
        done || overdue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: usize, window_secs: u64) -> (DrainPlan, Instant) {
        let start = Instant::now();
        let targets = (0..n).map(|k| (k, 100 + k as u64)).collect();
        (DrainPlan::new(start, Duration::from_secs(window_secs), targets), start)
    }

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn closes_are_spread_evenly_over_the_window_each_target_once() {
        let (mut p, start) = plan(10, 10);
        assert_eq!(p.due(start), &[], "nobody at the very start");
        assert_eq!(p.due(at(start, 1)), &[(0, 100)], "rounded up: the first as soon as time passes");
        assert_eq!(p.due(at(start, 1000)), &[], "10% of the window: still 1");
        assert_eq!(p.due(at(start, 3500)), &[(1, 101), (2, 102), (3, 103)], "35% rounds up to 4");
        assert_eq!(p.due(at(start, 3000)), &[], "a clock read out of order hands out nothing again");
        let rest: Vec<_> = p.due(at(start, 60_000)).to_vec();
        assert_eq!(rest, (4..10).map(|k| (k, 100 + k as u64)).collect::<Vec<_>>(), "capped at all of them");
        assert_eq!(p.due(at(start, 70_000)), &[]);
    }

    #[test]
    fn a_zero_window_closes_everyone_at_once() {
        let (mut p, start) = plan(3, 0);
        assert_eq!(p.due(start).len(), 3);
        assert_eq!(p.next_in(start), None);
    }

    #[test]
    fn the_poll_timeout_wakes_the_worker_when_the_next_close_is_due() {
        let (mut p, start) = plan(4, 8);
        assert_eq!(p.next_in(start), Some(Duration::from_secs(2)), "the first of 4 is due at 1/4 of 8 s");
        assert_eq!(p.due(at(start, 2000)).len(), 1);
        assert_eq!(p.next_in(at(start, 2500)), Some(Duration::from_millis(1500)));
        assert_eq!(p.next_in(at(start, 9000)), Some(Duration::ZERO), "late: at once");
        p.due(at(start, 8000));
        assert_eq!(p.next_in(at(start, 8000)), None, "all handed out: the tick decides");
    }

    #[test]
    fn the_worker_stops_when_everyone_is_gone_or_when_the_closes_overrun() {
        let (mut p, start) = plan(2, 10);
        assert!(!p.finished(at(start, 1000), false), "targets not closed yet");
        p.due(at(start, 10_000));
        assert!(p.finished(at(start, 10_000), false));
        assert!(!p.finished(at(start, 10_000), true), "close handshakes still running");
        assert!(!p.finished(at(start, 17_000), true));
        assert!(p.finished(at(start, 17_001), true), "window + close timeout + margin passed");
        let (empty, start) = plan(0, 10);
        assert!(empty.is_empty() && empty.finished(start, false), "nothing to drain: stop at once");
    }
}
