//! websocket-mongo: everything websocket-server does with MongoDB, behind a
//! narrow, non-generic API — the `messages` collection, a batch written
//! and what became of each of its messages, history read back.
//!
//! The server's threads own the policy (the writer's batching, retries,
//! backoff, health and metrics; the loader's choice of source) and speak
//! only [`StoredMessage`], [`BatchResult`] and [`Error`] to this crate.
//! The driver's generic code (its sync API over async actions, BSON
//! serialisation) is instantiated here, once, and not in the server crate,
//! so a change to the server's sources does not recompile it.
//!
//! - [`Mongo`] (this file): the client and the collection — opening it from
//!   a URI, the unique index, `insert_many`, the history queries.
//! - [`record`]: a stored chat message and its document
//!   `{room, seq, id, username, message, podName, timestamp: Date,
//!   clientId?, userId?}`.
//! - [`outcome`]: what a failed `insert_many` means for each document
//!   (already written, retry, drop for good), and the documents too large to
//!   send at all.
//!
//! Data flow: the writer thread hands a batch of [`StoredMessage`]s to
//! [`Mongo::insert`], which converts them to documents, sets apart the
//! oversized ones, writes the rest unordered and answers a [`BatchResult`]
//! (indexes into the batch) or an [`Error`] of the whole batch. The loader
//! calls [`Mongo::recent`] and [`Mongo::range`] and gets messages back,
//! oldest first.

use std::fmt;

use mongodb::bson::{doc, Document};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::sync::{Client, Collection};
use mongodb::IndexModel;

pub mod outcome;
pub mod record;

pub use outcome::{doc_error, BatchResult, DocError, MAX_DOCUMENT, UNKNOWN_TRIES};
pub use record::StoredMessage;

use outcome::{classify, oversize, TOO_LARGE};
use record::{from_document, key, key_of, to_document};

/// How long an operation may wait to find a usable server.
const SELECTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// The collection's name.
pub const COLLECTION: &str = "messages";
/// The database when the URI names none.
pub const DEFAULT_DATABASE: &str = "chat";

/// A failed operation (of the whole batch, for a write): what the driver
/// or MongoDB said. Only displayed (logged) by the server.
#[derive(Debug)]
pub struct Error(mongodb::error::Error);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl From<mongodb::error::Error> for Error {
    fn from(e: mongodb::error::Error) -> Error {
        Error(e)
    }
}

/// A handle on the `messages` collection (cheap to clone; one connection pool).
#[derive(Debug, Clone)]
pub struct Mongo {
    coll: Collection<Document>,
}

impl Mongo {
    /// Parses `uri` and prepares the client (database from the URI's path,
    /// default [`DEFAULT_DATABASE`]); connects lazily.
    pub fn open(uri: &str) -> Result<Mongo, Error> {
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

    /// Creates the unique `(room, seq)` index (a no-op if it exists), which
    /// makes a retried batch idempotent.
    pub fn ensure_index(&self) -> Result<(), Error> {
        let index = IndexModel::builder()
            .keys(doc! {"room": 1, "seq": 1})
            .options(IndexOptions::builder().unique(true).build())
            .build();
        self.coll.create_index(index).run()?;
        Ok(())
    }

    /// Writes `batch` unordered. Duplicates of a stored message count as
    /// written; a message whose `(room, seq)` is held by another message is
    /// a conflict ([`BatchResult::conflicts`]). `tries[i]` is
    /// how many times message `i` was refused before (see
    /// [`outcome::classify`]). `Err`: the whole batch is to be retried.
    pub fn insert(&self, batch: &[StoredMessage], tries: &[u8]) -> Result<BatchResult, Error> {
        let docs: Vec<Document> = batch.iter().map(to_document).collect();
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
                out.duplicates = r.duplicates.into_iter().map(|i| fit[i]).collect();
            }
        }
        out.conflicts = self.conflicts(batch, &out.duplicates)?;
        for (i, size) in sizes.iter().enumerate() {
            if let Some(size) = size {
                out.rejected.push((i, TOO_LARGE, format!("document of {size} bytes, over MongoDB's {MAX_DOCUMENT}")));
            }
        }
        Ok(out)
    }

    /// Of the messages refused as duplicates, those whose `(room, seq)`
    /// MongoDB holds as another message (by id), with that message's id:
    /// one read, only when a batch met duplicates (a retried batch, a
    /// resend, or a seq given twice).
    fn conflicts(&self, batch: &[StoredMessage], duplicates: &[usize]) -> Result<Vec<(usize, String)>, Error> {
        if duplicates.is_empty() {
            return Ok(Vec::new());
        }
        let filter = doc! {"$or": duplicates.iter().map(|&i| key(&batch[i])).collect::<Vec<Document>>()};
        let mut held = std::collections::HashMap::new();
        for d in self.coll.find(filter).projection(doc! {"room": 1, "seq": 1, "id": 1}).run()? {
            let d = d?;
            if let Some(k) = key_of(&d) {
                held.insert(k, d.get_str("id").unwrap_or_default().to_string());
            }
        }
        Ok(duplicates
            .iter()
            .filter_map(|&i| {
                let m = &batch[i];
                let stored = held.get(&(m.room.clone(), m.seq))?;
                // An id-less document (written by something else) cannot be told apart.
                (!stored.is_empty() && *stored != m.id).then(|| (i, stored.clone()))
            })
            .collect())
    }

    /// The last `n` messages of `room`, oldest first.
    pub fn recent(&self, room: &str, n: usize) -> Result<Vec<StoredMessage>, Error> {
        self.newest(doc! {"room": room}, n)
    }

    /// Messages of `room` with `after < seq < before`, oldest first, at most `n`
    /// (the newest `n` of that range).
    pub fn range(&self, room: &str, after: u64, before: u64, n: usize) -> Result<Vec<StoredMessage>, Error> {
        // Seqs are stored as i64; a bound beyond it is clamped, never wrapped.
        let (after, before) = (i64::try_from(after).unwrap_or(i64::MAX), i64::try_from(before).unwrap_or(i64::MAX));
        self.newest(doc! {"room": room, "seq": {"$gt": after, "$lt": before}}, n)
    }

    /// The newest `n` messages matching `filter`, oldest first; documents
    /// that are not messages of ours are skipped.
    fn newest(&self, filter: Document, n: usize) -> Result<Vec<StoredMessage>, Error> {
        let cursor = self.coll.find(filter).sort(doc! {"seq": -1}).limit(n as i64).run()?;
        let mut out = Vec::new();
        for doc in cursor {
            if let Some(m) = from_document(&doc?) {
                out.push(m);
            }
        }
        out.reverse();
        Ok(out)
    }
}
