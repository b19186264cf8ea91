//! Counters and gauges, and their Prometheus text exposition.
//!
//! Each worker owns one [`WorkerMetrics`] slot (cache-line aligned) and is
//! the only writer of it, so counting on the hot path is an uncontended
//! relaxed atomic add. `/metrics` sums the slots when it is scraped. The
//! dedicated threads (hub, Redis, MongoDB) have their own slots below.
//! docs/operations.md explains every metric; a test checks it names them all.
//!
//! Every metric is declared once, in the [`metric_struct!`] table of the
//! struct that holds it: field, type, Prometheus kind, name, help and (for
//! arrays) the label and its values. The struct, its `Default` and its part
//! of [`Metrics::render`] come from that table; label values that index an
//! array come from the enum they name ([`label_enum!`]), so the two cannot
//! drift apart. Only figures computed from several fields (per-worker
//! connections, protocol errors, the Redis up-gauge) are written out in
//! `render`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::auth::{self, peer};

/// Declares an enum whose variants are metric labels, and the array of those
/// labels in variant order (`LABELS[variant as usize]` is its label).
macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident, labels $labels:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $label:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
        }

        #[doc = concat!("The label values of [`", stringify!($name), "`], in variant order.")]
        pub const $labels: [&str; [$($label),*].len()] = [$($label),*];
    };
}
pub(crate) use label_enum;

/// Declares a struct of metrics: each field with its type and, when it is
/// exported as is, `= kind "name" "help"` and for an array `by label in
/// VALUES` (one sample per value, element `i` for `VALUES[i]`). Generates the
/// struct (deriving `Default`: every value starts at zero) and
/// `render_fields`, which writes those metrics summed over `slots`.
macro_rules! metric_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])*
                $field:ident: $ty:ty
                $(= $kind:ident $metric:literal $help:literal $(by $label:ident in $values:path)?)?;
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        impl $name {
            /// Writes the exported fields, each summed over `slots`.
            fn render_fields(out: &mut String, slots: &[&$name]) {
                $($(
                    let samples: Vec<(String, f64)> = metric_struct!(@samples slots, $field $(, $label, $values)?);
                    write_metric(out, $metric, stringify!($kind), $help, &samples);
                )?)*
            }
        }
    };
    (@samples $slots:ident, $field:ident) => {
        vec![(String::new(), $slots.iter().map(|s| s.$field.sample()).sum())]
    };
    (@samples $slots:ident, $field:ident, $label:ident, $values:path) => {
        $values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (format!("{{{}=\"{v}\"}}", stringify!($label)), $slots.iter().map(|s| s.$field[i].sample()).sum())
            })
            .collect()
    };
}

/// A value that can be exported as a sample.
trait Sample {
    fn sample(&self) -> f64;
}

impl Sample for AtomicU64 {
    fn sample(&self) -> f64 {
        self.load(Relaxed) as f64
    }
}

impl Sample for AtomicI64 {
    fn sample(&self) -> f64 {
        self.load(Relaxed) as f64
    }
}

impl Sample for bool {
    fn sample(&self) -> f64 {
        if *self {
            1.0
        } else {
            0.0
        }
    }
}

impl Sample for usize {
    fn sample(&self) -> f64 {
        *self as f64
    }
}

impl Sample for u64 {
    fn sample(&self) -> f64 {
        *self as f64
    }
}

impl Sample for f64 {
    fn sample(&self) -> f64 {
        *self
    }
}

/// Writes one metric family: HELP, TYPE and its samples.
fn write_metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

label_enum! {
    /// Why a connection was closed: the `reason` label of `websocket_closes_total`.
    pub enum CloseReason, labels CLOSE_REASONS {
        /// The client sent a close frame.
        Client = "client",
        /// The client dropped TCP without a close frame.
        Reset = "reset",
        /// A protocol violation (1002).
        Protocol = "protocol",
        /// Text that was not UTF-8 (1007).
        InvalidUtf8 = "invalid_utf8",
        /// A message over the size limit (1009).
        TooBig = "too_big",
        /// Outbound queue over its bound (1008).
        SlowConsumer = "slow_consumer",
        /// Sustained rate-limit abuse (1008).
        RateLimit = "rate_limit",
        /// Silent past twice the ping interval.
        Timeout = "timeout",
        /// No complete HTTP request in time.
        HandshakeTimeout = "handshake_timeout",
        /// Closed by a drain (1001).
        Drain = "drain",
        /// A socket error.
        Error = "error",
        /// The room's sequence had an unrecoverable gap; the client must resume (1012).
        Resync = "resync",
        /// The handler panicked.
        Panic = "panic",
        /// The connection's token reached its `exp` (4001).
        TokenExpired = "token_expired",
    }
}

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

metric_struct! {
    /// One worker's counters. Only that worker writes them.
    #[repr(align(128))]
    pub struct WorkerMetrics {
        /// Open WebSocket connections on this worker (gauge; also exported per worker).
        ws_connections: AtomicI64 = gauge "websocket_connections_active" "Open WebSocket connections.";
        /// Open connections still speaking HTTP (gauge).
        http_connections: AtomicI64 = gauge "websocket_http_connections_active"
            "Open connections that have not upgraded (HTTP requests in progress).";
        /// Open WebSocket connections that negotiated permessage-deflate (gauge).
        deflate_connections: AtomicI64 = gauge "websocket_deflate_connections_active"
            "Open WebSocket connections that negotiated permessage-deflate.";
        /// permessage-deflate offers declined (malformed or unsupported parameters).
        deflate_declined: AtomicU64 = counter "websocket_deflate_offers_declined_total"
            "permessage-deflate offers declined (malformed or unsupported parameters).";
        /// Frames queued with a compressed payload (RSV1).
        compressed_frames_out: AtomicU64 = counter "websocket_compressed_frames_sent_total"
            "Frames queued to clients with a compressed payload (permessage-deflate).";
        /// Connections accepted.
        accepted: AtomicU64 = counter "websocket_connections_accepted_total" "TCP connections accepted.";
        /// accept() failures (e.g. out of file descriptors).
        accept_errors: AtomicU64 = counter "websocket_accept_errors_total"
            "accept() failures, e.g. out of file descriptors.";
        /// WebSocket upgrades completed.
        upgrades: AtomicU64 = counter "websocket_upgrades_total" "WebSocket upgrades completed.";
        /// Per status in [`STATUSES`].
        http_responses: [AtomicU64; STATUSES.len()] = counter "websocket_http_responses_total"
            "HTTP responses by status (101 = upgrade)." by status in STATUSES;
        /// WebSocket frames received.
        frames_in: AtomicU64 = counter "websocket_frames_received_total" "WebSocket frames received.";
        /// WebSocket frames queued to clients.
        frames_out: AtomicU64 = counter "websocket_frames_sent_total" "WebSocket frames queued to clients.";
        /// Bytes read from sockets.
        bytes_in: AtomicU64 = counter "websocket_bytes_received_total" "Bytes read from client sockets.";
        /// Bytes written to sockets.
        bytes_out: AtomicU64 = counter "websocket_bytes_sent_total" "Bytes written to client sockets.";
        /// Write syscalls.
        writes: AtomicU64 = counter "websocket_write_syscalls_total" "Vectored write calls.";
        /// Chat messages accepted from clients.
        messages_in: AtomicU64 = counter "websocket_messages_received_total" "Chat messages accepted from clients.";
        /// Chat frames queued to clients (deliveries).
        messages_out: AtomicU64 = counter "websocket_messages_delivered_total" "Chat messages queued to clients.";
        /// Per code in [`REJECT_CODES`].
        rejects: [AtomicU64; REJECT_CODES.len()] = counter "websocket_messages_rejected_total"
            "Client frames answered with an error frame, by code." by code in REJECT_CODES;
        /// Per reason in [`CLOSE_REASONS`] (protocol errors are also exported by kind).
        closes: [AtomicU64; CLOSE_REASONS.len()] = counter "websocket_closes_total"
            "Connections closed, by reason." by reason in CLOSE_REASONS;
        /// Requests refused by authentication, per label in [`auth::REFUSALS`].
        auth_refusals: [AtomicU64; auth::REFUSALS.len()] = counter "websocket_auth_refusals_total"
            "Upgrades and /history requests refused by authentication (401/403), by reason."
            by reason in auth::REFUSALS;
        /// Upgrades refused by a per-address limit, per label in [`peer::LIMITS`].
        address_refusals: [AtomicU64; peer::LIMITS.len()] = counter "websocket_address_limit_refusals_total"
            "Upgrades refused by a per-address limit (429), by limit." by limit in peer::LIMITS;
        /// Handler panics caught.
        panics: AtomicU64 = counter "websocket_panics_total"
            "Connection handler panics caught (the connection is closed).";
        /// 1 once this worker's thread died of a panic outside the handlers.
        died: AtomicU64 = counter "websocket_worker_deaths_total"
            "Worker threads that died of a panic outside the handlers (the process drains and exits 1).";
        /// Bytes queued to clients and not yet written (gauge).
        outbound_bytes: AtomicI64 = gauge "websocket_outbound_queued_bytes" "Bytes queued to clients, not yet written.";
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

metric_struct! {
    /// Counters of the sequencing path (embedded hub or Redis bridge) and the
    /// MongoDB writer. Each field has one writer thread.
    pub struct BackendMetrics {
        /// Messages sequenced and handed to the workers.
        fanned_out: AtomicU64 = counter "websocket_messages_fanned_out_total"
            "Messages sequenced and handed to workers.";
        /// Resends not published again: their `clientId` was already sequenced.
        deduplicated: AtomicU64 = counter "websocket_messages_deduplicated_total"
            "Resent messages not published again (their clientId was already sequenced).";
        /// 1 while the publisher's Redis connection is up (replica mode; exported with the subscriber's).
        redis_publisher_up: AtomicI64;
        /// 1 while the Redis subscription is up (replica mode; exported with the publisher's).
        redis_subscriber_up: AtomicI64;
        /// Redis errors seen.
        redis_errors: AtomicU64 = counter "websocket_redis_errors_total" "Redis errors.";
        /// Redis reconnections.
        redis_reconnects: AtomicU64 = counter "websocket_redis_reconnects_total" "Redis reconnections.";
        /// Messages published to Redis.
        redis_published: AtomicU64 = counter "websocket_redis_published_total" "Messages published to Redis.";
        /// Messages received from the subscription.
        redis_received: AtomicU64 = counter "websocket_redis_received_total"
            "Messages received from the Redis subscription.";
        /// Rooms this pod is subscribed to (or subscribing, or lingering), gauge.
        redis_subscribed_rooms: AtomicI64 = gauge "websocket_redis_subscribed_rooms"
            "Rooms whose Redis shard channel this pod subscribes to (members here, or left less than a linger ago).";
        /// Messages the publisher holds for Redis (node down, failing over, or the room's subscription pending).
        redis_held: AtomicI64 = gauge "websocket_redis_held"
            "Messages held for Redis (their node down or failing over, or their room's subscription pending).";
        /// Bytes of the messages the publisher holds.
        redis_held_bytes: AtomicI64 = gauge "websocket_redis_held_bytes" "Bytes of the messages held for Redis.";
        /// Messages refused at once because the hold was full (count or bytes).
        redis_held_overflow: AtomicU64 = counter "websocket_redis_held_overflow_total"
            "Messages refused with `unavailable` at once because the hold for Redis was full.";
        /// Messages sent to Redis again because their slot was not where
        /// the slot map said (a failover or a resharding).
        redis_rerouted: AtomicU64 = counter "websocket_redis_rerouted_total"
            "Messages sent to Redis again because their slot had moved (MOVED, ASK, TRYAGAIN, or a room of a call not on its node).";
        /// Messages fetched to fill a seq gap.
        gap_filled: AtomicU64 = counter "websocket_gap_filled_total" "Messages fetched from history to fill a seq gap.";
        /// Gaps that could not be filled (the room's clients were made to resume).
        gap_resyncs: AtomicU64 = counter "websocket_gap_resyncs_total" "Unfillable seq gaps (clients told to resume).";
        /// Rooms whose Redis counter was found below this pod's floor.
        seq_raised: AtomicU64 = counter "websocket_redis_seq_raised_total" "Redis counters raised to this pod's floor.";
        /// Messages published again: Redis lost them before they came back.
        redis_republished: AtomicU64 = counter "websocket_redis_republished_total" "Messages Redis lost after answering, published again.";
        /// Messages waiting for MongoDB (gauge).
        mongo_queue: AtomicI64 = gauge "websocket_mongo_queue_depth" "Messages waiting to be written to MongoDB.";
        /// Messages written to MongoDB.
        mongo_written: AtomicU64 = counter "websocket_mongo_written_total" "Messages written to MongoDB.";
        /// MongoDB reads again for a hole just below the ring (deep resumes).
        history_refills: AtomicU64 = counter "websocket_history_refills_total"
            "MongoDB reads again for a deep resume's hole just below the ring.";
        /// Batch writes retried.
        mongo_retried: AtomicU64 = counter "websocket_mongo_retried_total" "MongoDB batch writes retried.";
        /// Messages dropped because the MongoDB queue was full.
        mongo_dropped: AtomicU64 = counter "websocket_mongo_dropped_total"
            "Messages dropped because the MongoDB queue was full.";
        /// Messages MongoDB refused for good (per-document permanent errors).
        mongo_rejected: AtomicU64 = counter "websocket_mongo_rejected_total"
            "Messages MongoDB refused for good (validation, too large...): logged with room and seq, not stored.";
        /// Messages not stored because MongoDB holds their seq as another message.
        mongo_seq_conflicts: AtomicU64 = counter "websocket_mongo_seq_conflicts_total"
            "Messages not stored: MongoDB holds their (room, seq) as another message (a seq given twice).";
        /// MongoDB errors seen.
        mongo_errors: AtomicU64 = counter "websocket_mongo_errors_total" "MongoDB errors.";
    }
}

metric_struct! {
    /// Process-wide figures that are read, not counted, at scrape time.
    pub struct Snapshot {
        /// The configured connection limit.
        max_connections: usize = gauge "websocket_max_connections" "Configured MAX_CONNECTIONS.";
        /// Messages waiting in the workers' inboxes.
        inbox_depth: usize = gauge "websocket_inbox_depth" "Broadcasts waiting in worker inboxes.";
        /// Broadcasts not queued at an inbox's bound (their clients resumed).
        inbox_dropped: u64 = counter "websocket_inbox_dropped_total"
            "Broadcasts not queued at a worker inbox's bound (that worker's chat clients were closed with 1012 to resume).";
        /// Messages waiting for the sequencer (hub or Redis publisher).
        publish_queue_depth: usize = gauge "websocket_publish_queue_depth" "Messages waiting to be sequenced.";
        /// Rooms with stored history.
        history_rooms: usize = gauge "websocket_history_rooms" "Rooms with stored history on this pod.";
        /// Bytes of stored history.
        history_bytes: usize = gauge "websocket_history_bytes" "Bytes of stored history on this pod.";
        /// 1 while draining.
        draining: bool = gauge "websocket_draining" "1 while the server drains after SIGTERM.";
        /// Resident memory, bytes.
        rss_bytes: u64 = gauge "process_resident_memory_bytes" "Resident memory size in bytes.";
        /// CPU time used, seconds.
        cpu_seconds: f64 = counter "process_cpu_seconds_total" "User and system CPU time in seconds.";
        /// Seconds since start.
        uptime_seconds: f64 = gauge "websocket_uptime_seconds" "Seconds since the process started.";
    }
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

    /// The Prometheus text exposition (format 0.0.4): the declared metrics of
    /// the workers (summed), the backend and `snap`, then those computed from
    /// several fields.
    pub fn render(&self, snap: &Snapshot) -> String {
        let mut out = String::with_capacity(8192);
        WorkerMetrics::render_fields(&mut out, &self.workers.iter().collect::<Vec<_>>());
        BackendMetrics::render_fields(&mut out, &[&self.backend]);
        Snapshot::render_fields(&mut out, &[snap]);

        let per_worker: Vec<_> = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| (format!("{{worker=\"{i}\"}}"), w.ws_connections.sample()))
            .collect();
        write_metric(
            &mut out,
            "websocket_worker_connections_active",
            "gauge",
            "Open WebSocket connections per worker thread.",
            &per_worker,
        );
        let protocol: Vec<_> = [CloseReason::Protocol, CloseReason::InvalidUtf8, CloseReason::TooBig]
            .iter()
            .map(|&r| (format!("{{kind=\"{}\"}}", CLOSE_REASONS[r as usize]), self.closes(r) as f64))
            .collect();
        write_metric(
            &mut out,
            "websocket_protocol_errors_total",
            "counter",
            "RFC 6455 violations by clients, by kind.",
            &protocol,
        );
        let b = &self.backend;
        let redis_up = b.redis_publisher_up.load(Relaxed).min(b.redis_subscriber_up.load(Relaxed));
        write_metric(
            &mut out,
            "websocket_redis_connected",
            "gauge",
            "1 while both Redis connections (publisher, subscription) are up (replica mode).",
            &[(String::new(), redis_up as f64)],
        );
        out
    }
}

/// Resident memory (bytes) and CPU time (user, system seconds) of this process, from /proc; zeros where unavailable.
pub fn process_usage() -> (u64, f64, f64) {
    let page = 4096u64;
    let rss = crate::procfs::resident_pages().map_or(0, |pages| pages * page);
    let ticks = crate::procfs::TICKS_PER_SEC as f64;
    let (user, system) = crate::procfs::cpu_ticks().map_or((0.0, 0.0), |(u, s)| (u as f64 / ticks, s as f64 / ticks));
    (rss, user, system)
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
