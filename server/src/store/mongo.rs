//! MongoDB: the `messages` collection and the writer thread.
//!
//! Document (one per chat message, written once by its origin pod):
//! `{room, seq, id, username, message, podName, timestamp: Date}` with a
//! unique index `{room: 1, seq: 1}` (`room_1_seq_1`), created at start-up,
//! so a retried batch is idempotent: a duplicate-key error (11000) means
//! "already written".
//!
//! The writer thread takes messages from a bounded channel, batches them
//! by size (`BATCH_MAX`) and time (`BATCH_WAIT`), and writes each batch
//! with an unordered `insert_many`. What failed is kept and retried with
//! backoff while new messages wait in the channel; nothing a worker does
//! ever waits for MongoDB. On shutdown it flushes what is queued, within a
//! deadline.
//!
//! Failures are told apart ([`classify`]): an error of the whole batch
//! (network, no primary, timeouts, a write concern not met) retries the
//! batch; a per-document error is looked at by its code — a duplicate key
//! is "already written", a transient code (not primary, shutting down,
//! interrupted, lock or time limits) retries that document, a permanent one
//! (validation, too large, bad value) drops it at once, and an unknown code
//! is retried [`UNKNOWN_TRIES`] times, then dropped. A dropped document is
//! logged with its room and seq and counted
//! (`websocket_mongo_rejected_total`); the rest of its batch goes on, so
//! one poison document never stalls persistence.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use mongodb::bson::{doc, DateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::sync::{Client, Collection};
use mongodb::IndexModel;

use crate::backoff::Backoff;
use crate::chat::history::Entry;
use crate::chat::protocol::ChatMessage;
use crate::health::{one_line, DependencyHealth};
use crate::metrics::Metrics;

/// Most messages per `insert_many`.
const BATCH_MAX: usize = 500;
/// Longest a message waits for its batch to fill.
const BATCH_WAIT: Duration = Duration::from_millis(20);
/// How long an operation may wait to find a usable server.
const SELECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;
/// Per-document codes that pass: no primary, node recovering or shutting
/// down, interrupted, lock, time and network limits. The document is retried.
const TRANSIENT_CODES: [i32; 20] =
    [6, 7, 24, 46, 50, 64, 89, 91, 112, 134, 189, 262, 9001, 10058, 10107, 11600, 11601, 11602, 13435, 13436];
/// Per-document codes that will never pass: bad value, type mismatch,
/// invalid field names, document validation, too large, key too long.
const PERMANENT_CODES: [i32; 10] = [2, 14, 52, 55, 56, 57, 121, 10334, 17280, 17419];
/// Attempts for a document refused with a code in neither list.
pub const UNKNOWN_TRIES: u8 = 3;
/// The largest document MongoDB stores (`maxBsonObjectSize`). The driver
/// refuses a whole batch, before sending it, when one of its documents is
/// larger, so such a document is set apart first.
pub const MAX_DOCUMENT: usize = 16 * 1024 * 1024;
/// MongoDB's code for a document over that size.
const TOO_LARGE: i32 = 10334;
/// The collection's name.
pub const COLLECTION: &str = "messages";
/// The database when the URI names none.
pub const DEFAULT_DATABASE: &str = "chat";

/// A handle on the `messages` collection (cheap to clone; one connection pool).
#[derive(Debug, Clone)]
pub struct Mongo {
    coll: Collection<Document>,
}

impl Mongo {
    /// Parses `uri` and prepares the client; connects lazily.
    pub fn open(uri: &str) -> mongodb::error::Result<Mongo> {
        let mut options = ClientOptions::parse(uri).run()?;
        options.server_selection_timeout.get_or_insert(SELECTION_TIMEOUT);
        options.connect_timeout.get_or_insert(SELECTION_TIMEOUT);
        options.app_name.get_or_insert_with(|| "websocket-server".to_string());
        let client = Client::with_options(options)?;
        let db = client.default_database().unwrap_or_else(|| client.database(DEFAULT_DATABASE));
        Ok(Mongo { coll: db.collection(COLLECTION) })
    }

    /// The database and collection, for logs.
    pub fn namespace(&self) -> String {
        self.coll.namespace().to_string()
    }

    /// Creates the unique `(room, seq)` index (a no-op if it exists).
    pub fn ensure_index(&self) -> mongodb::error::Result<()> {
        let index = IndexModel::builder()
            .keys(doc! {"room": 1, "seq": 1})
            .options(IndexOptions::builder().unique(true).build())
            .build();
        self.coll.create_index(index).run().map(|_| ())
    }

    /// Writes `docs` unordered. Duplicates count as written. `tries[i]` is
    /// how many times document `i` was refused before (for [`classify`]).
    /// `Err`: the whole batch is to be retried.
    pub fn insert(&self, docs: &[Document], tries: &[u8]) -> Result<BatchResult, mongodb::error::Error> {
        let sizes: Vec<Option<usize>> = docs.iter().map(oversize).collect();
        let fit: Vec<usize> = (0..docs.len()).filter(|&i| sizes[i].is_none()).collect();
        let mut out = BatchResult::default();
        if !fit.is_empty() {
            let sent = fit.iter().map(|&i| &docs[i]);
            if let Err(e) = self.coll.insert_many(sent).ordered(false).run() {
                let sent_tries: Vec<u8> = fit.iter().map(|&i| tries[i]).collect();
                let r = classify(&e, &sent_tries).ok_or(e)?;
                out.rejected = r.rejected.into_iter().map(|(i, code, msg)| (fit[i], code, msg)).collect();
                out.retry = r.retry.into_iter().map(|i| fit[i]).collect();
            }
        }
        for (i, size) in sizes.iter().enumerate() {
            if let Some(size) = size {
                out.rejected.push((i, TOO_LARGE, format!("document of {size} bytes, over MongoDB's {MAX_DOCUMENT}")));
            }
        }
        Ok(out)
    }

    /// The last `n` messages of `room`, as entries, oldest first.
    pub fn recent(&self, room: &str, n: usize) -> mongodb::error::Result<Vec<Entry>> {
        self.newest(doc! {"room": room}, n)
    }

    /// Messages of `room` with `after < seq < before`, oldest first, at most `n`
    /// (the newest `n` of that range).
    pub fn range(&self, room: &str, after: u64, before: u64, n: usize) -> mongodb::error::Result<Vec<Entry>> {
        // Seqs are stored as i64; a bound beyond it is clamped, never wrapped.
        let (after, before) = (i64::try_from(after).unwrap_or(i64::MAX), i64::try_from(before).unwrap_or(i64::MAX));
        self.newest(doc! {"room": room, "seq": {"$gt": after, "$lt": before}}, n)
    }

    /// The newest `n` messages matching `filter`, as entries, oldest first.
    fn newest(&self, filter: Document, n: usize) -> mongodb::error::Result<Vec<Entry>> {
        let cursor = self.coll.find(filter).sort(doc! {"seq": -1}).limit(n as i64).run()?;
        let mut out = Vec::new();
        for doc in cursor {
            if let Some(m) = from_document(&doc?) {
                out.push(Entry::new(m.seq, &m.to_json()));
            }
        }
        out.reverse();
        Ok(out)
    }
}

/// What became of a batch that MongoDB answered (every document not
/// listed is stored, newly or already).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchResult {
    /// Documents refused for good: (index in the batch, code, message).
    pub rejected: Vec<(usize, i32, String)>,
    /// Documents to write again (index in the batch).
    pub retry: Vec<usize>,
}

/// What a per-document error code means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocError {
    /// Already written (a retried batch, or a resend).
    Duplicate,
    /// Passes: write the document again.
    Transient,
    /// Will never pass: drop it.
    Permanent,
    /// Not known: retried a few times, then dropped.
    Unknown,
}

/// The BSON size of `d` if it is over [`MAX_DOCUMENT`] (only a document
/// whose strings come near the limit is measured).
fn oversize(d: &Document) -> Option<usize> {
    let strings: usize = d.values().map(|v| v.as_str().map_or(16, str::len)).sum();
    if strings < MAX_DOCUMENT - 4096 {
        return None;
    }
    let size = mongodb::bson::to_vec(d).map_or(usize::MAX, |v| v.len());
    (size > MAX_DOCUMENT).then_some(size)
}

/// The meaning of a per-document write error code.
pub fn doc_error(code: i32) -> DocError {
    match code {
        DUPLICATE_KEY => DocError::Duplicate,
        c if TRANSIENT_CODES.contains(&c) => DocError::Transient,
        c if PERMANENT_CODES.contains(&c) => DocError::Permanent,
        _ => DocError::Unknown,
    }
}

/// Splits a failed `insert_many` into per-document outcomes; `None` when
/// the error concerns the whole batch (network, server selection,
/// timeouts, a command error), which is then retried as a whole. A write
/// concern error retries every document not refused for good (the
/// unique index makes that idempotent).
pub fn classify(e: &mongodb::error::Error, tries: &[u8]) -> Option<BatchResult> {
    let (errors, concern) = match &*e.kind {
        ErrorKind::InsertMany(failure) => {
            (failure.write_errors.clone().unwrap_or_default(), failure.write_concern_error.is_some())
        }
        ErrorKind::Write(WriteFailure::WriteError(we)) if we.code == DUPLICATE_KEY => {
            return Some(BatchResult::default())
        }
        _ => return None,
    };
    let mut out = BatchResult::default();
    let mut failed = vec![false; tries.len()];
    for we in errors {
        let Some(slot) = failed.get_mut(we.index) else { continue };
        *slot = true;
        let give_up = match doc_error(we.code) {
            DocError::Duplicate => continue,
            DocError::Transient => false,
            DocError::Permanent => true,
            DocError::Unknown => tries[we.index].saturating_add(1) >= UNKNOWN_TRIES,
        };
        if give_up {
            out.rejected.push((we.index, we.code, one_line(&we.message)));
        } else {
            out.retry.push(we.index);
        }
    }
    if concern {
        out.retry.extend((0..tries.len()).filter(|&i| !failed[i]));
    }
    out.retry.sort_unstable();
    out.retry.dedup();
    Some(out)
}

/// The stored form of a message.
pub fn to_document(m: &ChatMessage) -> Document {
    let mut d = doc! {
        "room": &m.room,
        "seq": m.seq as i64,
        "id": &m.id,
        "username": &m.username,
        "message": &m.message,
        "podName": &m.pod_name,
        "timestamp": DateTime::from_millis(m.timestamp_ms),
    };
    if let Some(client_id) = &m.client_id {
        d.insert("clientId", client_id);
    }
    if let Some(user_id) = &m.user_id {
        d.insert("userId", user_id);
    }
    d
}

/// A stored message read back; `None` if the document is not one of ours.
pub fn from_document(d: &Document) -> Option<ChatMessage> {
    Some(ChatMessage {
        room: d.get_str("room").ok()?.to_string(),
        seq: u64::try_from(d.get_i64("seq").or_else(|_| d.get_i32("seq").map(i64::from)).ok()?).ok()?,
        id: d.get_str("id").unwrap_or_default().to_string(),
        username: d.get_str("username").ok()?.to_string(),
        message: d.get_str("message").ok()?.to_string(),
        pod_name: d.get_str("podName").unwrap_or_default().to_string(),
        timestamp_ms: d.get_datetime("timestamp").map_or(0, |t| t.timestamp_millis()),
        client_id: d.get_str("clientId").ok().map(str::to_string),
        user_id: d.get_str("userId").ok().map(str::to_string),
    })
}

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
        let mut batch: Vec<ChatMessage> = Vec::new();
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
                    Ok(msg) => batch.push(msg),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => closed = true,
                }
                while batch.len() < BATCH_MAX {
                    match self.rx.try_recv() {
                        Ok(msg) => batch.push(msg),
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
            let docs: Vec<Document> = batch.iter().map(to_document).collect();
            tries.resize(batch.len(), 0);
            match self.mongo.insert(&docs, &tries) {
                Ok(result) => {
                    for (i, code, message) in &result.rejected {
                        let msg = &batch[*i];
                        log::error!(
                            "MongoDB refused message {} of room {} for good (code {code}: {message}); not stored",
                            msg.seq,
                            msg.room
                        );
                    }
                    let done = batch.len() - result.retry.len();
                    m.mongo_rejected.fetch_add(result.rejected.len() as u64, Relaxed);
                    m.mongo_written.fetch_add((done - result.rejected.len()) as u64, Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_round_trip() {
        let m = ChatMessage {
            room: "r".into(),
            seq: 42,
            id: "x-1".into(),
            username: "ana".into(),
            message: "hi".into(),
            pod_name: "p-0".into(),
            timestamp_ms: 1_795_608_245_123,
            client_id: None,
            user_id: None,
        };
        let d = to_document(&m);
        assert_eq!(d.get_i64("seq").unwrap(), 42);
        assert_eq!(d.get_datetime("timestamp").unwrap().timestamp_millis(), 1_795_608_245_123);
        assert!(!d.contains_key("clientId"));
        assert_eq!(from_document(&d), Some(m.clone()));
        let m = ChatMessage { client_id: Some("c-9".into()), user_id: Some("u-9".into()), ..m };
        assert_eq!(from_document(&to_document(&m)), Some(m));
        assert_eq!(from_document(&doc! {"other": 1}), None);
    }

    /// A failed insert_many as the driver reports it (from the server's reply).
    fn insert_many_error(write_errors: &[(usize, i32)], concern: bool) -> mongodb::error::Error {
        let errors: Vec<Document> = write_errors
            .iter()
            .map(|&(i, c)| doc! {"index": i as i64, "code": c, "errmsg": format!("code {c}")})
            .collect();
        let mut failure = doc! {"writeErrors": errors};
        if concern {
            failure
                .insert("writeConcernError", doc! {"code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting"});
        }
        let failure: mongodb::error::InsertManyError = mongodb::bson::from_document(failure).unwrap();
        mongodb::error::Error::from(ErrorKind::InsertMany(failure))
    }

    #[test]
    fn per_document_errors_are_told_apart() {
        assert_eq!(doc_error(11000), DocError::Duplicate);
        for code in [10107, 13435, 189, 91, 11600, 50, 262, 112] {
            assert_eq!(doc_error(code), DocError::Transient, "{code}");
        }
        for code in [121, 10334, 2, 17280] {
            assert_eq!(doc_error(code), DocError::Permanent, "{code}");
        }
        assert_eq!(doc_error(8), DocError::Unknown);
    }

    #[test]
    fn a_poison_document_is_dropped_and_the_rest_of_the_batch_goes_on() {
        // 0 duplicate (already written), 1 fails validation, 2 no primary, 3 written.
        let e = insert_many_error(&[(0, 11000), (1, 121), (2, 10107)], false);
        let r = classify(&e, &[0; 4]).expect("per-document outcome");
        assert_eq!(r.rejected.iter().map(|x| (x.0, x.1)).collect::<Vec<_>>(), vec![(1, 121)]);
        assert_eq!(r.retry, vec![2]);
        // Unknown codes: retried, then dropped on the last try.
        let e = insert_many_error(&[(0, 8), (1, 8)], false);
        let r = classify(&e, &[0, UNKNOWN_TRIES - 1]).unwrap();
        assert_eq!((r.retry, r.rejected.len(), r.rejected[0].0), (vec![0], 1, 1));
        // A write concern error retries everything not refused for good.
        let e = insert_many_error(&[(1, 121)], true);
        let r = classify(&e, &[0; 3]).unwrap();
        assert_eq!((r.retry, r.rejected.len()), (vec![0, 2], 1));
        // Only duplicates: the batch is written.
        assert_eq!(classify(&insert_many_error(&[(0, 11000)], false), &[0; 2]), Some(BatchResult::default()));
    }

    #[test]
    fn errors_of_the_whole_batch_retry_it() {
        let io =
            mongodb::error::Error::from(ErrorKind::Io(Arc::new(std::io::Error::from(std::io::ErrorKind::TimedOut))));
        assert_eq!(classify(&io, &[0; 5]), None, "network/timeouts: the batch is retried");
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(classify(&mongodb::error::Error::from(ErrorKind::Io(Arc::new(reset))), &[0; 1]), None);
    }
}
