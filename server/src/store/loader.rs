//! The history loader: one thread that fetches what this pod's in-memory
//! history lacks, so workers never wait on Redis or MongoDB themselves.
//!
//! A worker whose client joins a room that is not complete here (a pod
//! that just started, a room evicted from memory, a gap), or resumes from
//! before the ring, sends a [`LoadRequest`] and answers the client when
//! the loader replies ([`ToWorker::Loaded`]). The loader:
//! 1. warms the room: the Redis list (the last `HISTORY_RING` messages,
//!    written atomically with each publish), and MongoDB when the list does
//!    not reach back far enough (Redis restarted, or no Redis at all);
//!    merged under the ring by [`History::merge_recent`];
//! 2. for a resume older than the ring (or a `/history` deeper than it),
//!    reads that range from MongoDB and hands it to the worker with the
//!    reply.
//!
//! A room is only marked known after a source that can be trusted answered:
//! if the Redis list might not reach back to the room's start and MongoDB
//! is configured but down, the room stays unknown, and the sequencer
//! refuses to number messages in it rather than restart its sequence.
//! Each source has its own backoff, so an outage costs a join nothing but
//! a missing history.
//!
//! [`History::merge_recent`]: crate::chat::history::History::merge_recent

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::Receiver;
use websocket_mongo::{Mongo, StoredMessage};

use crate::backoff::Backoff;
use crate::channels::{LoadRequest, Workers};
use crate::chat::history::{reaches_below, Entry, History};
use crate::chat::protocol::ChatMessage;
use crate::health::{one_line, DependencyHealth};
use crate::hub::inbox::ToWorker;
use crate::metrics::Metrics;
use crate::replica;
use crate::replica::pool::NodePool;
use crate::replica::topology::Topology;

/// Most messages a resume fetches from MongoDB, beyond the ring. A client
/// further behind gets the newest of them and `recovered: false`: a welcome
/// frame is not the place to replay an unbounded backlog.
pub const RESUME_MAX: usize = 10_000;

/// Times a hole just below the ring is read again from MongoDB.
const FILL_ATTEMPTS: u32 = 6;
/// Wait before reading again when MongoDB had nothing new (times the attempt):
/// the writer's batch interval and a write. At most 0.3 s in all.
const FILL_WAIT: Duration = Duration::from_millis(20);

/// The first missing range `[from, to)` in `entries` (ascending seqs)
/// between `start` and `end` (exclusive), if any.
fn first_hole(entries: &[Entry], start: u64, end: u64) -> Option<(u64, u64)> {
    let mut expected = start;
    for e in entries.iter().filter(|e| e.seq >= start && e.seq < end) {
        if e.seq > expected {
            return Some((expected, e.seq));
        }
        expected = e.seq + 1;
    }
    (expected < end).then_some((expected, end))
}

/// What the loader is started with, besides its channel and sources.
#[derive(Debug)]
pub struct LoaderHandles {
    /// What it completes.
    pub history: Arc<History>,
    /// Its counters (`metrics.backend`).
    pub metrics: Arc<Metrics>,
    /// Where the waiting connections are answered.
    pub workers: Workers,
}

/// Starts the loader thread; it ends when every sender is gone.
pub fn spawn(
    state: LoaderHandles,
    rx: Receiver<LoadRequest>,
    redis: Option<Arc<Topology>>,
    mongo: Option<Mongo>,
) -> std::io::Result<JoinHandle<()>> {
    let backoff = || Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let redis_backoff = DependencyHealth::new(backoff(), state.metrics.clone(), |m| &m.backend.redis_errors)
        .with_recovery_log("history loader: Redis answers again");
    let mongo_backoff = DependencyHealth::new(backoff(), state.metrics.clone(), |m| &m.backend.mongo_errors)
        .with_recovery_log("history loader: MongoDB answers again");
    let redis = redis.map(NodePool::new);
    let mut loader = Loader { state, redis, redis_backoff, mongo, mongo_backoff };
    std::thread::Builder::new().name("history-loader".into()).spawn(move || {
        for req in rx.iter() {
            loader.handle(req);
        }
    })
}

struct Loader {
    state: LoaderHandles,
    /// Connections to the Redis node owning each room's slot.
    redis: Option<NodePool>,
    /// Redis as this thread sees it: a failure and the recovery are
    /// logged once each; likewise for MongoDB.
    redis_backoff: DependencyHealth,
    mongo: Option<Mongo>,
    mongo_backoff: DependencyHealth,
}

impl Loader {
    fn handle(&mut self, req: LoadRequest) {
        let history = self.state.history.clone();
        let ring = history.ring();
        if history.needs_load(&req.room, None) {
            let list = self.redis_recent(&req.room, ring);
            // The list is enough if it starts at seq 1 or fills the ring.
            let sufficient = list.as_ref().is_some_and(|l| l.first().is_some_and(|e| e.seq == 1) || l.len() >= ring);
            let (answered, loaded) = match (&self.mongo, sufficient) {
                (Some(_), false) => match self.mongo_recent(&req.room, ring) {
                    Some(stored) => (true, list.unwrap_or_default().into_iter().chain(stored).collect()),
                    None => (false, Vec::new()),
                },
                _ => (list.is_some(), list.unwrap_or_default()),
            };
            if answered {
                history.merge_recent(&req.room, loaded);
            }
        }
        let mut older = Vec::new();
        let since = req.since.or_else(|| req.last.map(|n| history.last_seq(&req.room).saturating_sub(n as u64)));
        if let (Some(since), true) = (since, self.mongo.is_some()) {
            let first = history.first_seq(&req.room);
            // `since` is any u64 a client sent: compared without overflow,
            // and one at or beyond the room's last seq asks MongoDB nothing.
            if reaches_below(since, first) {
                older = self.deep_range(&req.room, since, first);
            }
        }
        if let Some(r) = req.reply {
            self.state.workers.send_to(r.worker, ToWorker::Loaded { key: r.key, conn_id: r.conn_id, older });
        }
    }

    /// Every message of `room` after `since` that MongoDB and the ring hold,
    /// oldest first, for a resume (or a `/history`) older than the ring,
    /// which started at `first` when the load began.
    ///
    /// The answer ends with a copy of the ring as it is once MongoDB has
    /// answered. The worker builds its reply later, from the ring as it is
    /// then: what slid out of the ring in between is in that copy, so the
    /// two parts meet unless more than a whole ring of messages arrives in
    /// the room during the one inbox hop between this reply and the
    /// worker's snapshot.
    ///
    /// MongoDB is read with no upper bound (everything it holds after the
    /// point asked for, not only what is below the ring when the read
    /// starts): what slides out of the ring while MongoDB answers is then
    /// in the answer, because the writer is far less than a ring behind
    /// the sequencer. Bounding a read at the ring's start made a busy room
    /// a chase: each read let a message or two slide out of the ring, the
    /// next read fetched those and let the next ones slide, and the last
    /// read left exactly that hole just below the ring. A hole that remains
    /// (the MongoDB writer has not written the newest ones yet: it batches)
    /// is read again, a bounded number of times with a short wait, so a
    /// resume whose messages are all in MongoDB comes back complete. Holes
    /// deeper than a ring below the window are not waited for (the
    /// messages are missing from MongoDB; the answer says
    /// `recovered:false`).
    fn deep_range(&mut self, room: &str, since: u64, first: u64) -> Vec<Entry> {
        let window = self.state.history.ring() as u64;
        // The newest RESUME_MAX below the ring, plus what overlaps the ring.
        let fetch = RESUME_MAX + window as usize;
        let Some(mut older) = self.mongo_range(room, since, u64::MAX, fetch) else { return Vec::new() };
        // Truncated at RESUME_MAX: the answer starts at the oldest fetched.
        let start = match older.first() {
            Some(e) if older.len() >= fetch => e.seq,
            _ => since + 1, // since < first, so no overflow
        };
        let mut attempt = 0;
        loop {
            let (held, ring_first) = self.state.history.held_after(room, since);
            // A hole worth reading again: attempts left, and close to the ring.
            let refill = first_hole(&older, start, ring_first)
                .filter(|&(_, to)| attempt + 1 < FILL_ATTEMPTS && to.saturating_add(window) >= first);
            let Some((from, _)) = refill else {
                older.retain(|e| e.seq < ring_first);
                older.extend(held.into_iter().filter(|e| e.seq >= ring_first));
                return older;
            };
            self.state.metrics.backend.history_refills.fetch_add(1, Relaxed);
            let before = older.len();
            // Everything from the hole on (what slid out since, and newer).
            let more = self.mongo_range(room, from - 1, u64::MAX, fetch).unwrap_or_default();
            older.extend(more);
            older.sort_by_key(|e| e.seq);
            older.dedup_by_key(|e| e.seq);
            if older.len() == before {
                // Not written yet: give the MongoDB writer a batch or two.
                std::thread::sleep(FILL_WAIT * (attempt + 1));
            }
            attempt += 1;
        }
    }

    /// The room's Redis list, or `None` if Redis is not configured or failed.
    fn redis_recent(&mut self, room: &str, ring: usize) -> Option<Vec<Entry>> {
        if !self.redis_backoff.ready() {
            return None;
        }
        let pool = self.redis.as_mut()?;
        let result: redis::RedisResult<Vec<Vec<u8>>> =
            pool.query(room, redis::cmd("LRANGE").arg(replica::history_key(room)).arg(-(ring as i64)).arg(-1));
        match result {
            Ok(items) => {
                self.redis_backoff.ok();
                Some(
                    items
                        .iter()
                        .filter_map(|raw| replica::decode(raw))
                        .filter(|m| m.room == room)
                        .map(|m| Entry::new(m.seq, &m.to_json()))
                        .collect(),
                )
            }
            Err(e) => {
                self.redis_failed(&e);
                None
            }
        }
    }

    fn redis_failed(&mut self, e: &redis::RedisError) {
        self.redis_backoff.failed(|_| {
            format!("history loader: Redis unavailable ({}); joins get the history held in memory", one_line(e))
        });
    }

    fn mongo_recent(&mut self, room: &str, n: usize) -> Option<Vec<Entry>> {
        let mongo = self.mongo.clone()?;
        self.with_mongo(|| mongo.recent(room, n))
    }

    fn mongo_range(&mut self, room: &str, after: u64, before: u64, n: usize) -> Option<Vec<Entry>> {
        let mongo = self.mongo.clone()?;
        self.with_mongo(|| mongo.range(room, after, before, n))
    }

    /// Runs one MongoDB read unless its backoff says wait; the messages
    /// read, framed as history entries.
    fn with_mongo(
        &mut self,
        op: impl FnOnce() -> Result<Vec<StoredMessage>, websocket_mongo::Error>,
    ) -> Option<Vec<Entry>> {
        if !self.mongo_backoff.ready() {
            return None;
        }
        match op() {
            Ok(stored) => {
                self.mongo_backoff.ok();
                Some(stored.into_iter().map(ChatMessage::from).map(|m| Entry::new(m.seq, &m.to_json())).collect())
            }
            Err(e) => {
                self.mongo_backoff.failed(|_| {
                    format!("history loader: MongoDB read failed ({}); retrying with backoff", one_line(&e))
                });
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(seqs: impl IntoIterator<Item = u64>) -> Vec<Entry> {
        seqs.into_iter().map(|s| Entry::new(s, "{}")).collect()
    }

    #[test]
    fn holes_are_found_between_the_start_and_the_ring() {
        assert_eq!(first_hole(&entries(5..=9), 5, 10), None);
        assert_eq!(first_hole(&entries(5..=9), 5, 12), Some((10, 12)), "slid out of the ring meanwhile");
        assert_eq!(first_hole(&entries([5, 6, 9]), 5, 12), Some((7, 9)));
        assert_eq!(first_hole(&entries(7..=9), 5, 10), Some((5, 7)));
        assert_eq!(first_hole(&[], 5, 5), None);
        assert_eq!(first_hole(&entries(1..=20), 5, 10), None, "outside the range is ignored");
    }
}
