//! What crosses threads: the message types of the channels between the
//! threads of one process, and the sending handles that go with them.
//!
//! Every thread is started with the handles it uses (server.rs wires them)
//! and never with a process-wide state: this module and the data types it
//! carries (`chat`, `metrics`) are what the thread modules have in common,
//! so the dependencies run one way —
//! `server` → the threads (`net::worker`, `hub`, `replica`, `store`) →
//! `channels` → data (`chat`, `metrics`, `ws`) — and no cycle goes through
//! a thread module (docs/architecture.md, "Module dependencies").
//!
//! | Channel | From | To | Carries |
//! | --- | --- | --- | --- |
//! | publish (bounded, `try_send`) | workers | sequencer (`hub` or `redis-publisher`) | [`HubCommand`] |
//! | inbox (bounded, waker) | sequencer, subscriber, loader, main | one worker | [`ToWorker`] through [`Workers`] |
//! | loader (bounded, `try_send`) | workers, sequencer | `history-loader` | [`LoadRequest`] |
//! | interest (unbounded) | workers | `redis-subscriber` | [`Interest`] |
//! | store (bounded, `try_send`) | sequencer (`hub`; `redis-subscriber` on delivery, `redis-publisher` at exit, via `replica::echo`) | `mongo-writer` | [`ChatMessage`] through [`StoreSender`] |
//!
//! [`ToWorker`] and the inbox itself stay in [`crate::hub::inbox`], which
//! depends on nothing but `chat`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};

use crate::chat::history::History;
use crate::chat::protocol::ChatMessage;
use crate::hub::inbox::{InboxSender, ToWorker};
use crate::metrics::Metrics;

/// The connection a message came from, so a failure can be reported to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Worker index.
    pub worker: usize,
    /// Slab key on that worker.
    pub key: usize,
    /// Connection id (keys are reused, ids are not).
    pub conn_id: u64,
}

/// A validated chat message on its way to the sequencer.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The room.
    pub room: Arc<str>,
    /// Sender's name.
    pub username: String,
    /// The text.
    pub message: String,
    /// When the worker accepted it, Unix milliseconds.
    pub timestamp_ms: i64,
    /// The sender's own id for it: a resend with the same id is published once.
    pub client_id: Option<String>,
    /// The sender's user id (the token's `sub`), when authentication is on.
    pub user_id: Option<String>,
    /// Who sent it.
    pub origin: Origin,
}

/// What the sequencer's channel carries.
#[derive(Debug)]
pub enum HubCommand {
    /// Sequence and deliver a message.
    Publish(Publish),
    /// Finish what is queued, then exit (after the workers have stopped).
    Stop,
}

/// Where to send the answer to a load.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    /// Worker index.
    pub worker: usize,
    /// Slab key of the waiting connection.
    pub key: usize,
    /// Its id.
    pub conn_id: u64,
}

/// A request to complete a room's history on this pod.
#[derive(Debug, Clone)]
pub struct LoadRequest {
    /// The room.
    pub room: Arc<str>,
    /// A resume point, when the client sent one.
    pub since: Option<u64>,
    /// Reach back to the room's last `N` messages (a `/history` request),
    /// as `since` does to a resume point.
    pub last: Option<usize>,
    /// The waiting connection, if any (a sequencer's request has none).
    pub reply: Option<Reply>,
}

/// A chat connection's room, as workers report it to the Redis subscriber.
#[derive(Debug)]
pub enum Interest {
    /// A connection started joining the room.
    Join(Arc<str>),
    /// A connection that had joined (or was joining) is gone.
    Leave(Arc<str>),
}

/// The way into every worker, for the threads that answer or broadcast to
/// them (sequencer, subscriber, loader): the inboxes, by worker index, and
/// what decides whether a broadcast is also sent compressed.
#[derive(Debug, Clone)]
pub struct Workers {
    /// One per worker, by worker index.
    pub inboxes: Vec<InboxSender>,
    /// `COMPRESSION`: broadcasts may be compressed.
    pub compression: bool,
    /// `COMPRESSION_MIN_BYTES`: shorter ones never are.
    pub compression_min_bytes: usize,
    /// For the count of connections that negotiated permessage-deflate.
    pub metrics: Arc<Metrics>,
}

impl Workers {
    /// Sends `msg` to worker `index`, if there is one.
    pub fn send_to(&self, index: usize, msg: ToWorker) {
        if let Some(inbox) = self.inboxes.get(index) {
            inbox.send(msg);
        }
    }
}

/// The way into the MongoDB writer thread.
#[derive(Debug, Clone)]
pub struct StoreSender {
    tx: Sender<ChatMessage>,
    metrics: Arc<Metrics>,
    /// `MONGO_QUEUE_MAX`, for the log line.
    queue_max: usize,
}

impl StoreSender {
    /// Wraps the writer's channel (bounded at `queue_max`).
    pub fn new(tx: Sender<ChatMessage>, metrics: Arc<Metrics>, queue_max: usize) -> StoreSender {
        StoreSender { tx, metrics, queue_max }
    }

    /// Queues `msg` for writing; never blocks.
    pub fn enqueue(&self, msg: ChatMessage) {
        let m = &self.metrics.backend;
        match self.tx.try_send(msg) {
            Ok(()) => {
                m.mongo_queue.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(msg)) | Err(TrySendError::Disconnected(msg)) => {
                let dropped = m.mongo_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    log::error!(
                        "MongoDB queue full ({} messages): dropped room={} seq={} (dropped so far: {dropped})",
                        self.queue_max,
                        msg.room,
                        msg.seq
                    );
                }
            }
        }
    }
}

/// What a sequencer thread (the embedded hub or the Redis publisher) is
/// started with: its ways out, and the history it numbers from.
#[derive(Debug)]
pub struct SequencerHandles {
    /// `POD_NAME`, stamped on every message it sequences.
    pub pod_name: String,
    /// The rooms' rings and what this pod knows of their seqs.
    pub history: Arc<History>,
    /// Its counters (`metrics.backend`).
    pub metrics: Arc<Metrics>,
    /// Answers to senders (refusals) and, for the embedded hub, the fan-out.
    pub workers: Workers,
    /// Loads of rooms whose latest seq is not known here.
    pub loader: Option<Sender<LoadRequest>>,
    /// The MongoDB writer, when `MONGO_URI` is set.
    pub store: Option<StoreSender>,
}
