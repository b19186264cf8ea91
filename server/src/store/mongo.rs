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
//! with an unordered `insert_many`. A failed batch is kept and retried with
//! backoff while new messages wait in the channel; nothing a worker does
//! ever waits for MongoDB. On shutdown it flushes what is queued, within a
//! deadline.

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
use crate::state::ServerState;

/// Most messages per `insert_many`.
const BATCH_MAX: usize = 500;
/// Longest a message waits for its batch to fill.
const BATCH_WAIT: Duration = Duration::from_millis(20);
/// How long an operation may wait to find a usable server.
const SELECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// MongoDB's duplicate-key error code.
const DUPLICATE_KEY: i32 = 11000;
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

    /// Writes `docs` unordered. Duplicates count as written. Returns how
    /// many were new.
    pub fn insert(&self, docs: &[Document]) -> mongodb::error::Result<usize> {
        match self.coll.insert_many(docs).ordered(false).run() {
            Ok(r) => Ok(r.inserted_ids.len()),
            Err(e) => match *e.kind {
                ErrorKind::InsertMany(ref failure)
                    if failure.write_concern_error.is_none()
                        && failure
                            .write_errors
                            .as_ref()
                            .is_some_and(|w| w.iter().all(|we| we.code == DUPLICATE_KEY)) =>
                {
                    let dups = failure.write_errors.as_ref().map_or(0, |w| w.len());
                    Ok(docs.len() - dups)
                }
                ErrorKind::Write(WriteFailure::WriteError(ref we)) if we.code == DUPLICATE_KEY => Ok(0),
                _ => Err(e),
            },
        }
    }

    /// The last `n` messages of `room`, as entries, oldest first.
    pub fn recent(&self, room: &str, n: usize) -> mongodb::error::Result<Vec<Entry>> {
        self.newest(doc! {"room": room}, n)
    }

    /// Messages of `room` with `after < seq < before`, oldest first, at most `n`
    /// (the newest `n` of that range).
    pub fn range(&self, room: &str, after: u64, before: u64, n: usize) -> mongodb::error::Result<Vec<Entry>> {
        self.newest(doc! {"room": room, "seq": {"$gt": after as i64, "$lt": before as i64}}, n)
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
/// [`StoreSender`](super::StoreSender) dropped) and the queue is written,
/// or until `deadline` passes once shutdown has begun.
pub fn spawn_writer(
    state: Arc<ServerState>,
    mongo: Mongo,
    rx: Receiver<ChatMessage>,
    shutdown_deadline: Arc<std::sync::OnceLock<Instant>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("mongo-writer".into()).spawn(move || {
        Writer {
            state,
            mongo,
            rx,
            shutdown_deadline,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(10)),
        }
        .run()
    })
}

struct Writer {
    state: Arc<ServerState>,
    mongo: Mongo,
    rx: Receiver<ChatMessage>,
    shutdown_deadline: Arc<std::sync::OnceLock<Instant>>,
    backoff: Backoff,
}

impl Writer {
    fn run(mut self) {
        let m = &self.state.metrics.backend;
        let mut indexed = false;
        let mut batch: Vec<ChatMessage> = Vec::new();
        let mut closed = false;
        loop {
            if !indexed && self.backoff.ready() {
                match self.mongo.ensure_index() {
                    Ok(()) => {
                        indexed = true;
                        log::info!("MongoDB: unique index (room, seq) ready on {}", self.mongo.namespace());
                    }
                    Err(e) => {
                        m.mongo_errors.fetch_add(1, Relaxed);
                        if !self.backoff.failing() {
                            log::warn!("MongoDB unavailable ({}); retrying with backoff", one_line(&e));
                        }
                        self.backoff.failed();
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
            match self.mongo.insert(&docs) {
                Ok(_) => {
                    m.mongo_written.fetch_add(batch.len() as u64, Relaxed);
                    m.mongo_queue.fetch_sub(batch.len() as i64, Relaxed);
                    batch.clear();
                    if self.backoff.failing() {
                        log::info!("MongoDB writes resumed");
                    }
                    self.backoff.succeeded();
                }
                Err(e) => {
                    m.mongo_errors.fetch_add(1, Relaxed);
                    m.mongo_retried.fetch_add(1, Relaxed);
                    let first = !self.backoff.failing();
                    let wait = self.backoff.failed();
                    if first {
                        log::warn!(
                            "MongoDB write of {} messages failed ({}); retrying in {:?}, queue {}",
                            batch.len(),
                            one_line(&e),
                            wait,
                            self.rx.len()
                        );
                    }
                }
            }
        }
        log::debug!("mongo-writer stopped");
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
}
