//! The MongoDB writer thread: every message sequenced on this pod, stored
//! once.
//!
//! It takes messages from a bounded channel (fed by
//! [`StoreSender`](crate::channels::StoreSender)), batches them by size
//! (`BATCH_MAX`) and time (`BATCH_WAIT`), and hands each batch to
//! [`Mongo::insert`] (an unordered `insert_many`, in the `websocket-mongo`
//! crate, which also owns the document's shape and the unique `(room, seq)`
//! index that makes a retried batch idempotent). What failed is kept and
//! retried with backoff while new messages wait in the channel; nothing a
//! worker does ever waits for MongoDB. On shutdown it flushes what is
//! queued, within a deadline.
//!
//! `websocket-mongo` tells the failures apart
//! ([`websocket_mongo::outcome`]): an error of the whole batch (network, no
//! primary, timeouts, a write concern not met) retries the batch; per
//! document, a duplicate key is "already written", a transient code retries
//! that message, a permanent one (validation, too large, bad value) drops it
//! at once, and an unknown code is retried
//! [`UNKNOWN_TRIES`](websocket_mongo::UNKNOWN_TRIES) times, then dropped. A
//! dropped message is logged here with its room and seq and counted
//! (`websocket_mongo_rejected_total`); the rest of its batch goes on, so
//! one poison message never stalls persistence. A duplicate whose
//! `(room, seq)` MongoDB holds as another message (a seq given twice, after
//! Redis lost acknowledged writes) is not stored either: logged and counted
//! (`websocket_mongo_seq_conflicts_total`).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use websocket_mongo::{Mongo, StoredMessage};

use crate::backoff::Backoff;
use crate::chat::protocol::ChatMessage;
use crate::health::{one_line, DependencyHealth};
use crate::metrics::Metrics;

/// Most messages per `insert_many`.
const BATCH_MAX: usize = 500;
/// Longest a message waits for its batch to fill.
const BATCH_WAIT: Duration = Duration::from_millis(20);

/// Starts the writer thread. It runs until `rx` is disconnected (every
/// [`StoreSender`](crate::channels::StoreSender) dropped) and the queue is written,
/// or until `deadline` passes once shutdown has begun.
pub fn spawn_writer(
    metrics: Arc<Metrics>,
    mongo: Mongo,
    rx: Receiver<ChatMessage>,
    shutdown_deadline: Arc<std::sync::OnceLock<Instant>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("mongo-writer".into()).spawn(move || {
        let backoff = DependencyHealth::new(
            Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
            metrics.clone(),
            |m| &m.backend.mongo_errors,
        )
        .with_recovery_log("MongoDB writes resumed");
        Writer { metrics, mongo, rx, shutdown_deadline, backoff }.run()
    })
}

struct Writer {
    metrics: Arc<Metrics>,
    mongo: Mongo,
    rx: Receiver<ChatMessage>,
    shutdown_deadline: Arc<std::sync::OnceLock<Instant>>,
    /// MongoDB as this thread sees it: retries' backoff, the error count,
    /// the outage's log lines.
    backoff: DependencyHealth,
}

impl Writer {
    fn run(mut self) {
        let m = &self.metrics.backend;
        let mut indexed = false;
        // Converted on arrival (the strings move, nothing is copied).
        let mut batch: Vec<StoredMessage> = Vec::new();
        // Times each message of `batch` was refused with an unknown code.
        let mut tries: Vec<u8> = Vec::new();
        let mut closed = false;
        loop {
            if !indexed && self.backoff.ready() {
                match self.mongo.ensure_index() {
                    Ok(()) => {
                        indexed = true;
                        log::info!("MongoDB: unique index (room, seq) ready on {}", self.mongo.namespace());
                    }
                    Err(e) => {
                        self.backoff
                            .failed(|_| format!("MongoDB unavailable ({}); retrying with backoff", one_line(&e)));
                    }
                }
            }
            // Fill the batch: wait for the first message, then take what is there.
            if !closed && batch.len() < BATCH_MAX {
                let wait = if batch.is_empty() { Duration::from_millis(200) } else { BATCH_WAIT };
                match self.rx.recv_timeout(wait) {
                    Ok(msg) => batch.push(msg.into()),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => closed = true,
                }
                while batch.len() < BATCH_MAX {
                    match self.rx.try_recv() {
                        Ok(msg) => batch.push(msg.into()),
                        Err(_) => break,
                    }
                }
            }
            let past_deadline = self.shutdown_deadline.get().is_some_and(|d| Instant::now() >= *d);
            if batch.is_empty() {
                if closed {
                    break;
                }
                continue;
            }
            if past_deadline {
                let left = batch.len() + self.rx.len();
                m.mongo_dropped.fetch_add(left as u64, Relaxed);
                m.mongo_queue.fetch_sub(left as i64, Relaxed);
                log::error!("MongoDB: shutdown deadline reached with {left} messages unwritten");
                break;
            }
            if !indexed || !self.backoff.ready() {
                std::thread::sleep(self.backoff.remaining().min(Duration::from_millis(100)));
                continue;
            }
            tries.resize(batch.len(), 0);
            match self.mongo.insert(&batch, &tries) {
                Ok(result) => {
                    for (i, code, message) in &result.rejected {
                        let msg = &batch[*i];
                        log::error!(
                            "MongoDB refused message {} of room {} for good (code {code}: {}); not stored",
                            msg.seq,
                            msg.room,
                            one_line(message)
                        );
                    }
                    for (i, stored_id) in &result.conflicts {
                        let msg = &batch[*i];
                        log::error!(
                            "MongoDB holds seq {} of room {} as message {stored_id}, not as message {}: a seq was given \
                             twice (Redis lost acknowledged writes); this one is not stored",
                            msg.seq,
                            msg.room,
                            msg.id
                        );
                    }
                    let done = batch.len() - result.retry.len();
                    let not_written = result.rejected.len() + result.conflicts.len();
                    m.mongo_rejected.fetch_add(result.rejected.len() as u64, Relaxed);
                    m.mongo_seq_conflicts.fetch_add(result.conflicts.len() as u64, Relaxed);
                    m.mongo_written.fetch_add((done - not_written) as u64, Relaxed);
                    m.mongo_queue.fetch_sub(done as i64, Relaxed);
                    // Keep only what is to be written again, with its count of tries.
                    let mut keep = result.retry.iter().peekable();
                    let mut i = 0;
                    batch.retain(|_| {
                        let kept = keep.next_if_eq(&&i).is_some();
                        i += 1;
                        kept
                    });
                    tries = result.retry.iter().map(|&i| tries[i].saturating_add(1)).collect();
                    if batch.is_empty() {
                        self.backoff.ok();
                    } else {
                        m.mongo_retried.fetch_add(1, Relaxed);
                        let n = batch.len();
                        self.backoff.retry_later(|wait| {
                            format!("MongoDB refused {n} messages for now (e.g. no primary); retrying them in {wait:?}")
                        });
                    }
                }
                Err(e) => {
                    m.mongo_retried.fetch_add(1, Relaxed);
                    let (n, queued) = (batch.len(), self.rx.len());
                    self.backoff.failed(|wait| {
                        format!(
                            "MongoDB write of {n} messages failed ({}); retrying in {wait:?}, queue {queued}",
                            one_line(&e)
                        )
                    });
                }
            }
        }
        log::debug!("mongo-writer stopped");
    }
}
