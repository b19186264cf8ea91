//! Measurements: the latency histogram (log-linear buckets, bounded memory,
//! about 1.6 % resolution, exact maximum) and the run's event counters.

use std::collections::BTreeMap;

use websocket_server::procfs;

/// Sub-buckets per power of two: 64 gives a resolution of 1/64.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Values are clamped below 2^36 µs (about 19 hours).
const MAX_VALUE: u64 = (1 << 36) - 1;
const BUCKETS: usize = ((36 - SUB_BITS as usize) + 1) * SUB as usize;

/// A histogram of microsecond values.
#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    count: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Histogram {
        Histogram { counts: vec![0; BUCKETS].into_boxed_slice(), count: 0, sum: 0, max: 0 }
    }

    /// Records one value.
    pub fn record(&mut self, value: u64) {
        let v = value.min(MAX_VALUE);
        self.counts[index(v)] += 1;
        self.count += 1;
        self.sum += v as u128;
        self.max = self.max.max(v);
    }

    /// Forgets every value recorded.
    pub fn clear(&mut self) {
        self.counts.fill(0);
        self.count = 0;
        self.sum = 0;
        self.max = 0;
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest value recorded (exact), 0 when empty.
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The mean, 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The value at percentile `p` (0–100): the upper edge of the bucket
    /// holding that rank, never above the maximum. 0 when empty.
    pub fn percentile(&self, p: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((p / 100.0) * self.count as f64).ceil().clamp(1.0, self.count as f64) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return upper(i).min(self.max);
            }
        }
        self.max
    }
}

/// The bucket of `v`: exact below 64, then 64 buckets per power of two.
fn index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let shift = 63 - v.leading_zeros() - SUB_BITS;
    ((shift as u64 + 1) * SUB + ((v >> shift) - SUB)) as usize
}

/// The largest value that falls in bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < SUB {
        return i;
    }
    let shift = i / SUB - 1;
    let lower = (SUB + i % SUB) << shift;
    lower + (1 << shift) - 1
}

/// Counters of everything that happened, for the report and the status line.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// TCP connects started.
    pub attempts: u64,
    /// Connects after a connection's first one.
    pub reconnects: u64,
    /// Upgrades answered with 101.
    pub opens: u64,
    /// Joined connections that ended (server close, error or EOF), before the final close.
    pub disconnects: u64,
    /// Failures: refused, timeouts, non-101, protocol errors, connections lost without a close frame.
    pub errors: u64,
    /// `errors` by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Close frames received from the server, by code (0: no code).
    pub close_codes: BTreeMap<u16, u64>,
    /// Chat messages sent.
    pub sent: u64,
    /// Live chat frames received.
    pub received_live: u64,
    /// Chat frames received inside join history.
    pub received_history: u64,
    /// Error frames received, by code.
    pub rejected_by_code: BTreeMap<String, u64>,
    /// Other frames: binary frames, unknown types, unparseable JSON, wrong room.
    pub protocol_anomalies: BTreeMap<String, u64>,
    /// Pings answered.
    pub pongs: u64,
    /// Shutdown notices received.
    pub shutdown_notices: u64,
    /// Upgrades that agreed to permessage-deflate.
    pub deflate_opens: u64,
    /// Bytes on the wire (frame header and payload) of the live chat frames received.
    pub chat_wire_bytes: u64,
    /// Live chat frames received compressed (RSV1).
    pub chat_compressed: u64,
}

impl Counters {
    /// Counts one error of `kind`.
    pub fn error(&mut self, kind: &str) {
        self.errors += 1;
        *self.errors_by_kind.entry(kind.to_string()).or_default() += 1;
    }

    /// Counts one protocol anomaly of `kind`.
    pub fn anomaly(&mut self, kind: &str) {
        *self.protocol_anomalies.entry(kind.to_string()).or_default() += 1;
    }

    /// Total error frames received.
    pub fn rejected(&self) -> u64 {
        self.rejected_by_code.values().sum()
    }
}

/// This process's CPU time (user + system, seconds) and peak resident
/// memory (MiB), read from /proc; zeros where /proc is not available.
pub fn process_usage() -> (f64, f64) {
    let ticks = procfs::TICKS_PER_SEC as f64;
    let cpu = procfs::cpu_ticks().map_or(0.0, |(user, system)| (user + system) as f64 / ticks);
    let rss = procfs::peak_resident_kib().map_or(0.0, |kib| kib as f64 / 1024.0);
    (cpu, rss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut prev = None;
        for v in (0..5000).chain([MAX_VALUE - 1, MAX_VALUE]) {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            assert!(upper(i) >= v, "{v}");
            // Resolution: the bucket is at most 1/64 of its values wide.
            assert!(upper(i) - v <= v / SUB, "{v}");
            if let Some(p) = prev.filter(|_| v < 5000) {
                assert!(i == p || i == p + 1, "{v}");
            }
            prev = Some(i);
        }
        for i in 1..BUCKETS {
            assert_eq!(index(upper(i - 1) + 1), i, "bucket {i}");
        }
        assert_eq!(index(MAX_VALUE), BUCKETS - 1);
    }

    #[test]
    fn percentiles_of_a_uniform_range() {
        let mut h = Histogram::new();
        for v in 1..=10_000 {
            h.record(v);
        }
        assert_eq!(h.count(), 10_000);
        let close = |got: u64, want: u64| (got as f64 - want as f64).abs() <= want as f64 / 60.0;
        assert!(close(h.percentile(50.0), 5000), "{}", h.percentile(50.0));
        assert!(close(h.percentile(90.0), 9000), "{}", h.percentile(90.0));
        assert!(close(h.percentile(99.0), 9900), "{}", h.percentile(99.0));
        assert_eq!(h.percentile(100.0), 10_000);
        assert_eq!(h.max(), 10_000);
        assert!((h.mean() - 5000.5).abs() < 1e-9);
    }

    #[test]
    fn small_values_are_exact_and_edges_hold() {
        let mut h = Histogram::new();
        assert_eq!((h.percentile(50.0), h.max(), h.mean()), (0, 0, 0.0));
        for v in [3, 3, 3, 7] {
            h.record(v);
        }
        assert_eq!((h.percentile(0.0), h.percentile(50.0), h.percentile(75.0), h.percentile(76.0)), (3, 3, 3, 7));
        h.record(u64::MAX);
        assert_eq!(h.max(), MAX_VALUE);
        h.clear();
        assert_eq!((h.count(), h.percentile(50.0), h.max(), h.mean()), (0, 0, 0, 0.0));
        h.record(9);
        assert_eq!((h.count(), h.percentile(99.0), h.max()), (1, 9, 9));
    }

    #[test]
    fn process_usage_is_read() {
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let (cpu, rss) = process_usage();
        assert!(cpu > 0.0 && rss > 1.0, "{cpu} {rss} {x}");
    }

    #[test]
    fn counters() {
        let mut c = Counters::default();
        c.error("refused");
        c.error("refused");
        c.error("http_503");
        assert_eq!(c.errors, 3);
        assert_eq!(c.errors_by_kind["refused"], 2);
        c.rejected_by_code.insert("rate_limited".into(), 4);
        c.rejected_by_code.insert("too_long".into(), 1);
        assert_eq!(c.rejected(), 5);
        c.anomaly("bad_json");
        assert_eq!(c.protocol_anomalies["bad_json"], 1);
    }
}
