//! Counters and gauges, and their Prometheus text exposition.
//!
//! Each worker owns one [`WorkerMetrics`] slot (cache-line aligned) and is
//! the only writer of it, so counting on the hot path is an uncontended
//! relaxed atomic add. `/metrics` sums the slots when it is scraped. The
//! dedicated threads (hub, Redis, MongoDB) have their own slots below.
//! docs/operations.md explains every metric; a test checks it names them all.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::auth::{self, peer};

/// Why a connection was closed: the `reason` label of `websocket_closes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum CloseReason {
    /// The client sent a close frame.
    Client,
    /// The client dropped TCP without a close frame.
    Reset,
    /// A protocol violation (1002).
    Protocol,
    /// Text that was not UTF-8 (1007).
    InvalidUtf8,
    /// A message over the size limit (1009).
    TooBig,
    /// Outbound queue over its bound (1008).
    SlowConsumer,
    /// Sustained rate-limit abuse (1008).
    RateLimit,
    /// Silent past twice the ping interval.
    Timeout,
    /// No complete HTTP request in time.
    HandshakeTimeout,
    /// Closed by a drain (1001).
    Drain,
    /// A socket error.
    Error,
    /// The room's sequence had an unrecoverable gap; the client must resume (1012).
    Resync,
    /// The handler panicked.
    Panic,
    /// The connection's token reached its `exp` (4001).
    TokenExpired,
}

/// The label values of [`CloseReason`], in order.
pub const CLOSE_REASONS: [&str; 14] = [
    "client",
    "reset",
    "protocol",
    "invalid_utf8",
    "too_big",
    "slow_consumer",
    "rate_limit",
    "timeout",
    "handshake_timeout",
    "drain",
    "error",
    "resync",
    "panic",
    "token_expired",
];

/// HTTP statuses counted in `websocket_http_responses_total`.
pub const STATUSES: [u16; 13] = [101, 200, 400, 401, 403, 404, 405, 408, 426, 429, 431, 500, 503];

/// Error-frame codes counted in `websocket_messages_rejected_total`.
pub const REJECT_CODES: [&str; 9] = [
    "bad_json",
    "unknown_type",
    "bad_message",
    "too_long",
    "bad_username",
    "bad_client_id",
    "rate_limited",
    "unavailable",
    "unsupported",
];

/// One worker's counters. Only that worker writes them.
#[derive(Debug)]
#[repr(align(128))]
pub struct WorkerMetrics {
    /// Open WebSocket connections on this worker (gauge).
    pub ws_connections: AtomicI64,
    /// Open connections still speaking HTTP (gauge).
    pub http_connections: AtomicI64,
    /// Open WebSocket connections that negotiated permessage-deflate (gauge).
    pub deflate_connections: AtomicI64,
    /// permessage-deflate offers declined (malformed or unsupported parameters).
    pub deflate_declined: AtomicU64,
    /// Frames queued with a compressed payload (RSV1).
    pub compressed_frames_out: AtomicU64,
    /// Bytes queued to clients and not yet written (gauge).
    pub outbound_bytes: AtomicI64,
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// accept() failures (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
    /// WebSocket upgrades completed.
    pub upgrades: AtomicU64,
    /// WebSocket frames received.
    pub frames_in: AtomicU64,
    /// WebSocket frames queued to clients.
    pub frames_out: AtomicU64,
    /// Bytes read from sockets.
    pub bytes_in: AtomicU64,
    /// Bytes written to sockets.
    pub bytes_out: AtomicU64,
    /// Chat messages accepted from clients.
    pub messages_in: AtomicU64,
    /// Chat frames queued to clients (deliveries).
    pub messages_out: AtomicU64,
    /// Write syscalls.
    pub writes: AtomicU64,
    /// Handler panics caught.
    pub panics: AtomicU64,
    /// 1 once this worker's thread died of a panic outside the handlers.
    pub died: AtomicU64,
    /// Per status in [`STATUSES`].
    pub http_responses: [AtomicU64; STATUSES.len()],
    /// Per code in [`REJECT_CODES`].
    pub rejects: [AtomicU64; REJECT_CODES.len()],
    /// Per reason in [`CLOSE_REASONS`].
    pub closes: [AtomicU64; CLOSE_REASONS.len()],
    /// Requests refused by authentication, per label in [`auth::REFUSALS`].
    pub auth_refusals: [AtomicU64; auth::REFUSALS.len()],
    /// Upgrades refused by a per-address limit, per label in [`peer::LIMITS`].
    pub address_refusals: [AtomicU64; peer::LIMITS.len()],
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        WorkerMetrics {
            ws_connections: AtomicI64::new(0),
            http_connections: AtomicI64::new(0),
            deflate_connections: AtomicI64::new(0),
            deflate_declined: AtomicU64::new(0),
            compressed_frames_out: AtomicU64::new(0),
            outbound_bytes: AtomicI64::new(0),
            accepted: AtomicU64::new(0),
            accept_errors: AtomicU64::new(0),
            upgrades: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            frames_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            panics: AtomicU64::new(0),
            died: AtomicU64::new(0),
            http_responses: std::array::from_fn(|_| AtomicU64::new(0)),
            rejects: std::array::from_fn(|_| AtomicU64::new(0)),
            closes: std::array::from_fn(|_| AtomicU64::new(0)),
            auth_refusals: std::array::from_fn(|_| AtomicU64::new(0)),
            address_refusals: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl WorkerMetrics {
    /// Counts an HTTP response with `status`.
    pub fn http_response(&self, status: u16) {
        if let Some(i) = STATUSES.iter().position(|&s| s == status) {
            self.http_responses[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts an error frame with `code`.
    pub fn reject(&self, code: &str) {
        if let Some(i) = REJECT_CODES.iter().position(|&c| c == code) {
            self.rejects[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a close.
    pub fn close(&self, reason: CloseReason) {
        self.closes[reason as usize].fetch_add(1, Relaxed);
    }

    /// Counts a request refused by authentication.
    pub fn auth_refusal(&self, reason: auth::Refusal) {
        self.auth_refusals[reason as usize].fetch_add(1, Relaxed);
    }

    /// Counts an upgrade refused by a per-address limit.
    pub fn address_refusal(&self, limit: peer::Limit) {
        self.address_refusals[limit as usize].fetch_add(1, Relaxed);
    }
}

/// Counters of the sequencing path (embedded hub or Redis bridge) and the
/// MongoDB writer. Each field has one writer thread.
#[derive(Debug, Default)]
pub struct BackendMetrics {
    /// Messages sequenced and handed to the workers.
    pub fanned_out: AtomicU64,
    /// Resends not published again: their `clientId` was already sequenced.
    pub deduplicated: AtomicU64,
    /// 1 while the publisher's Redis connection is up (replica mode).
    pub redis_publisher_up: AtomicI64,
    /// 1 while the Redis subscription is up (replica mode).
    pub redis_subscriber_up: AtomicI64,
    /// Redis errors seen.
    pub redis_errors: AtomicU64,
    /// Redis reconnections.
    pub redis_reconnects: AtomicU64,
    /// Messages published to Redis.
    pub redis_published: AtomicU64,
    /// Messages received from the subscription.
    pub redis_received: AtomicU64,
    /// Rooms this pod is subscribed to (or subscribing, or lingering), gauge.
    pub redis_subscribed_rooms: AtomicI64,
    /// Messages fetched to fill a seq gap.
    pub gap_filled: AtomicU64,
    /// Gaps that could not be filled (the room's clients were made to resume).
    pub gap_resyncs: AtomicU64,
    /// MongoDB reads again for a hole just below the ring (deep resumes).
    pub history_refills: AtomicU64,
    /// Messages waiting for MongoDB (gauge).
    pub mongo_queue: AtomicI64,
    /// Messages written to MongoDB.
    pub mongo_written: AtomicU64,
    /// Batch writes retried.
    pub mongo_retried: AtomicU64,
    /// Messages dropped because the MongoDB queue was full.
    pub mongo_dropped: AtomicU64,
    /// Messages MongoDB refused for good (per-document permanent errors).
    pub mongo_rejected: AtomicU64,
    /// MongoDB errors seen.
    pub mongo_errors: AtomicU64,
}

/// Process-wide figures that are read, not counted, at scrape time.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// 1 while draining.
    pub draining: bool,
    /// Messages waiting in the workers' inboxes.
    pub inbox_depth: usize,
    /// Broadcasts not queued at an inbox's bound (their clients resumed).
    pub inbox_dropped: u64,
    /// Messages waiting for the sequencer (hub or Redis publisher).
    pub publish_queue_depth: usize,
    /// Rooms with stored history.
    pub history_rooms: usize,
    /// Bytes of stored history.
    pub history_bytes: usize,
    /// Resident memory, bytes.
    pub rss_bytes: u64,
    /// CPU time used, seconds.
    pub cpu_seconds: f64,
    /// Seconds since start.
    pub uptime_seconds: f64,
    /// The configured connection limit.
    pub max_connections: usize,
}

/// Every metric of the process.
#[derive(Debug)]
pub struct Metrics {
    /// One slot per worker.
    pub workers: Vec<WorkerMetrics>,
    /// The sequencing and storage threads.
    pub backend: BackendMetrics,
}

impl Metrics {
    /// Slots for `workers` workers.
    pub fn new(workers: usize) -> Metrics {
        Metrics {
            workers: (0..workers).map(|_| WorkerMetrics::default()).collect(),
            backend: BackendMetrics::default(),
        }
    }

    fn sum(&self, f: impl Fn(&WorkerMetrics) -> &AtomicU64) -> u64 {
        self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
    }

    fn gauge(&self, f: impl Fn(&WorkerMetrics) -> &AtomicI64) -> i64 {
        self.workers.iter().map(|w| f(w).load(Relaxed)).sum()
    }

    /// Open WebSocket connections that negotiated permessage-deflate.
    pub fn deflate_connections(&self) -> i64 {
        self.gauge(|w| &w.deflate_connections)
    }

    /// Open WebSocket connections in the process.
    pub fn ws_connections(&self) -> i64 {
        self.gauge(|w| &w.ws_connections)
    }

    /// WebSocket upgrades since start.
    pub fn upgrades(&self) -> u64 {
        self.sum(|w| &w.upgrades)
    }

    /// Bytes queued to clients, process-wide.
    pub fn outbound_bytes(&self) -> i64 {
        self.gauge(|w| &w.outbound_bytes)
    }

    /// Chat messages accepted from clients, and deliveries queued to them.
    pub fn messages(&self) -> (u64, u64) {
        (self.sum(|w| &w.messages_in), self.sum(|w| &w.messages_out))
    }

    /// Closes for `reason`, process-wide.
    pub fn closes(&self, reason: CloseReason) -> u64 {
        self.sum(|w| &w.closes[reason as usize])
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::with_capacity(8192);
        let b = &self.backend;
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let one = |v: f64| vec![(String::new(), v)];
        let per_worker = |f: &dyn Fn(&WorkerMetrics) -> f64| {
            self.workers.iter().enumerate().map(|(i, w)| (format!("{{worker=\"{i}\"}}"), f(w))).collect::<Vec<_>>()
        };

        metric(
            "websocket_connections_active",
            "gauge",
            "Open WebSocket connections.",
            &one(self.ws_connections() as f64),
        );
        metric(
            "websocket_worker_connections_active",
            "gauge",
            "Open WebSocket connections per worker thread.",
            &per_worker(&|w| w.ws_connections.load(Relaxed) as f64),
        );
        metric(
            "websocket_http_connections_active",
            "gauge",
            "Open connections that have not upgraded (HTTP requests in progress).",
            &one(self.gauge(|w| &w.http_connections) as f64),
        );
        metric(
            "websocket_deflate_connections_active",
            "gauge",
            "Open WebSocket connections that negotiated permessage-deflate.",
            &one(self.gauge(|w| &w.deflate_connections) as f64),
        );
        metric(
            "websocket_deflate_offers_declined_total",
            "counter",
            "permessage-deflate offers declined (malformed or unsupported parameters).",
            &one(self.sum(|w| &w.deflate_declined) as f64),
        );
        metric(
            "websocket_compressed_frames_sent_total",
            "counter",
            "Frames queued to clients with a compressed payload (permessage-deflate).",
            &one(self.sum(|w| &w.compressed_frames_out) as f64),
        );
        metric("websocket_max_connections", "gauge", "Configured MAX_CONNECTIONS.", &one(snap.max_connections as f64));
        metric(
            "websocket_connections_accepted_total",
            "counter",
            "TCP connections accepted.",
            &one(self.sum(|w| &w.accepted) as f64),
        );
        metric(
            "websocket_accept_errors_total",
            "counter",
            "accept() failures, e.g. out of file descriptors.",
            &one(self.sum(|w| &w.accept_errors) as f64),
        );
        metric("websocket_upgrades_total", "counter", "WebSocket upgrades completed.", &one(self.upgrades() as f64));
        let statuses: Vec<_> = STATUSES
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("{{status=\"{s}\"}}"), self.sum(|w| &w.http_responses[i]) as f64))
            .collect();
        metric("websocket_http_responses_total", "counter", "HTTP responses by status (101 = upgrade).", &statuses);
        metric(
            "websocket_frames_received_total",
            "counter",
            "WebSocket frames received.",
            &one(self.sum(|w| &w.frames_in) as f64),
        );
        metric(
            "websocket_frames_sent_total",
            "counter",
            "WebSocket frames queued to clients.",
            &one(self.sum(|w| &w.frames_out) as f64),
        );
        metric(
            "websocket_bytes_received_total",
            "counter",
            "Bytes read from client sockets.",
            &one(self.sum(|w| &w.bytes_in) as f64),
        );
        metric(
            "websocket_bytes_sent_total",
            "counter",
            "Bytes written to client sockets.",
            &one(self.sum(|w| &w.bytes_out) as f64),
        );
        metric(
            "websocket_write_syscalls_total",
            "counter",
            "Vectored write calls.",
            &one(self.sum(|w| &w.writes) as f64),
        );
        let (msgs_in, msgs_out) = self.messages();
        metric(
            "websocket_messages_received_total",
            "counter",
            "Chat messages accepted from clients.",
            &one(msgs_in as f64),
        );
        metric(
            "websocket_messages_delivered_total",
            "counter",
            "Chat messages queued to clients.",
            &one(msgs_out as f64),
        );
        let rejects: Vec<_> = REJECT_CODES
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("{{code=\"{c}\"}}"), self.sum(|w| &w.rejects[i]) as f64))
            .collect();
        metric(
            "websocket_messages_rejected_total",
            "counter",
            "Client frames answered with an error frame, by code.",
            &rejects,
        );
        let closes: Vec<_> = CLOSE_REASONS
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("{{reason=\"{r}\"}}"), self.sum(|w| &w.closes[i]) as f64))
            .collect();
        metric("websocket_closes_total", "counter", "Connections closed, by reason.", &closes);
        let auth_refusals: Vec<_> = auth::REFUSALS
            .iter()
            .enumerate()
            .map(|(i, r)| (format!("{{reason=\"{r}\"}}"), self.sum(|w| &w.auth_refusals[i]) as f64))
            .collect();
        metric(
            "websocket_auth_refusals_total",
            "counter",
            "Upgrades and /history requests refused by authentication (401/403), by reason.",
            &auth_refusals,
        );
        let address_refusals: Vec<_> = peer::LIMITS
            .iter()
            .enumerate()
            .map(|(i, l)| (format!("{{limit=\"{l}\"}}"), self.sum(|w| &w.address_refusals[i]) as f64))
            .collect();
        metric(
            "websocket_address_limit_refusals_total",
            "counter",
            "Upgrades refused by a per-address limit (429), by limit.",
            &address_refusals,
        );
        let protocol: Vec<_> = [
            ("protocol", CloseReason::Protocol),
            ("invalid_utf8", CloseReason::InvalidUtf8),
            ("too_big", CloseReason::TooBig),
        ]
        .iter()
        .map(|(l, r)| (format!("{{kind=\"{l}\"}}"), self.closes(*r) as f64))
        .collect();
        metric("websocket_protocol_errors_total", "counter", "RFC 6455 violations by clients, by kind.", &protocol);
        metric(
            "websocket_panics_total",
            "counter",
            "Connection handler panics caught (the connection is closed).",
            &one(self.sum(|w| &w.panics) as f64),
        );
        metric(
            "websocket_worker_deaths_total",
            "counter",
            "Worker threads that died of a panic outside the handlers (the process drains and exits 1).",
            &one(self.sum(|w| &w.died) as f64),
        );
        metric(
            "websocket_outbound_queued_bytes",
            "gauge",
            "Bytes queued to clients, not yet written.",
            &one(self.outbound_bytes() as f64),
        );
        metric(
            "websocket_inbox_depth",
            "gauge",
            "Broadcasts waiting in worker inboxes.",
            &one(snap.inbox_depth as f64),
        );
        metric(
            "websocket_inbox_dropped_total",
            "counter",
            "Broadcasts not queued at a worker inbox's bound (that worker's chat clients were closed with 1012 to resume).",
            &one(snap.inbox_dropped as f64),
        );
        metric(
            "websocket_publish_queue_depth",
            "gauge",
            "Messages waiting to be sequenced.",
            &one(snap.publish_queue_depth as f64),
        );
        metric(
            "websocket_messages_fanned_out_total",
            "counter",
            "Messages sequenced and handed to workers.",
            &one(b.fanned_out.load(Relaxed) as f64),
        );
        metric(
            "websocket_messages_deduplicated_total",
            "counter",
            "Resent messages not published again (their clientId was already sequenced).",
            &one(b.deduplicated.load(Relaxed) as f64),
        );
        metric(
            "websocket_history_rooms",
            "gauge",
            "Rooms with stored history on this pod.",
            &one(snap.history_rooms as f64),
        );
        metric(
            "websocket_history_bytes",
            "gauge",
            "Bytes of stored history on this pod.",
            &one(snap.history_bytes as f64),
        );
        metric(
            "websocket_draining",
            "gauge",
            "1 while the server drains after SIGTERM.",
            &one(if snap.draining { 1.0 } else { 0.0 }),
        );
        let redis_up = b.redis_publisher_up.load(Relaxed).min(b.redis_subscriber_up.load(Relaxed));
        metric(
            "websocket_redis_connected",
            "gauge",
            "1 while both Redis connections (publisher, subscription) are up (replica mode).",
            &one(redis_up as f64),
        );
        metric("websocket_redis_errors_total", "counter", "Redis errors.", &one(b.redis_errors.load(Relaxed) as f64));
        metric(
            "websocket_redis_reconnects_total",
            "counter",
            "Redis reconnections.",
            &one(b.redis_reconnects.load(Relaxed) as f64),
        );
        metric(
            "websocket_redis_published_total",
            "counter",
            "Messages published to Redis.",
            &one(b.redis_published.load(Relaxed) as f64),
        );
        metric(
            "websocket_redis_received_total",
            "counter",
            "Messages received from the Redis subscription.",
            &one(b.redis_received.load(Relaxed) as f64),
        );
        metric(
            "websocket_redis_subscribed_rooms",
            "gauge",
            "Rooms whose Redis shard channel this pod subscribes to (members here, or left less than a linger ago).",
            &one(b.redis_subscribed_rooms.load(Relaxed) as f64),
        );
        metric(
            "websocket_gap_filled_total",
            "counter",
            "Messages fetched from history to fill a seq gap.",
            &one(b.gap_filled.load(Relaxed) as f64),
        );
        metric(
            "websocket_gap_resyncs_total",
            "counter",
            "Unfillable seq gaps (clients told to resume).",
            &one(b.gap_resyncs.load(Relaxed) as f64),
        );
        metric(
            "websocket_mongo_queue_depth",
            "gauge",
            "Messages waiting to be written to MongoDB.",
            &one(b.mongo_queue.load(Relaxed) as f64),
        );
        metric(
            "websocket_mongo_written_total",
            "counter",
            "Messages written to MongoDB.",
            &one(b.mongo_written.load(Relaxed) as f64),
        );
        metric(
            "websocket_history_refills_total",
            "counter",
            "MongoDB reads again for a deep resume's hole just below the ring.",
            &one(b.history_refills.load(Relaxed) as f64),
        );
        metric(
            "websocket_mongo_retried_total",
            "counter",
            "MongoDB batch writes retried.",
            &one(b.mongo_retried.load(Relaxed) as f64),
        );
        metric(
            "websocket_mongo_dropped_total",
            "counter",
            "Messages dropped because the MongoDB queue was full.",
            &one(b.mongo_dropped.load(Relaxed) as f64),
        );
        metric(
            "websocket_mongo_rejected_total",
            "counter",
            "Messages MongoDB refused for good (validation, too large...): logged with room and seq, not stored.",
            &one(b.mongo_rejected.load(Relaxed) as f64),
        );
        metric("websocket_mongo_errors_total", "counter", "MongoDB errors.", &one(b.mongo_errors.load(Relaxed) as f64));
        metric("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", &one(snap.rss_bytes as f64));
        metric("process_cpu_seconds_total", "counter", "User and system CPU time in seconds.", &one(snap.cpu_seconds));
        metric("websocket_uptime_seconds", "gauge", "Seconds since the process started.", &one(snap.uptime_seconds));
        out
    }
}

/// Resident memory (bytes) and CPU time (user, system seconds) of this
/// process, from /proc; zeros where unavailable.
pub fn process_usage() -> (u64, f64, f64) {
    let page = 4096u64;
    let rss = crate::procfs::resident_pages().map_or(0, |pages| pages * page);
    let ticks = crate::procfs::TICKS_PER_SEC as f64;
    let (user, system) = crate::procfs::cpu_ticks().map_or((0.0, 0.0), |(u, s)| (u as f64 / ticks, s as f64 / ticks));
    (rss, user, system)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_line_up_with_their_enums() {
        assert_eq!(CLOSE_REASONS[CloseReason::Panic as usize], "panic");
        assert_eq!(CLOSE_REASONS[CloseReason::SlowConsumer as usize], "slow_consumer");
        assert_eq!(CLOSE_REASONS[CloseReason::Client as usize], "client");
    }

    #[test]
    fn render_sums_workers_and_is_valid_exposition() {
        let m = Metrics::new(2);
        m.workers[0].ws_connections.fetch_add(3, Relaxed);
        m.workers[1].ws_connections.fetch_add(4, Relaxed);
        m.workers[1].http_response(426);
        m.workers[0].close(CloseReason::SlowConsumer);
        m.workers[1].reject("rate_limited");
        let text = m.render(&Snapshot { draining: true, ..Snapshot::default() });
        assert!(text.contains("\nwebsocket_connections_active 7\n"));
        assert!(text.contains("websocket_worker_connections_active{worker=\"1\"} 4\n"));
        assert!(text.contains("websocket_http_responses_total{status=\"426\"} 1\n"));
        assert!(text.contains("websocket_closes_total{reason=\"slow_consumer\"} 1\n"));
        assert!(text.contains("websocket_messages_rejected_total{code=\"rate_limited\"} 1\n"));
        assert!(text.contains("websocket_draining 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
            assert!(name.starts_with("websocket_") || name.starts_with("process_"), "{line}");
        }
    }

    #[test]
    fn process_usage_reads_proc() {
        let (rss, user, system) = process_usage();
        assert!(rss > 0);
        assert!(user >= 0.0 && system >= 0.0);
    }

    #[test]
    fn operations_doc_describes_every_metric() {
        let doc = include_str!("../../docs/operations.md");
        let text = Metrics::new(1).render(&Snapshot::default());
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let name = line.split_whitespace().nth(2).unwrap();
            assert!(doc.contains(&format!("`{name}")), "docs/operations.md does not describe {name}");
        }
    }
}
