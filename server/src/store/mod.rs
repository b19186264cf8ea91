//! Persistence: MongoDB (when `MONGO_URI` is set) and the history loader.
//!
//! - [`StoreSender`]: how the sequencer hands each message sequenced on this
//!   pod to the writer thread, never blocking; a full queue
//!   (`MONGO_QUEUE_MAX`) drops the message, counts it and logs it loudly.
//! - [`mongo`]: the connection, the document shape and the writer thread
//!   (batched unordered `insert_many`, idempotent through the unique
//!   `(room, seq)` index, retried with backoff, flushed on shutdown).
//! - [`loader`]: the thread that warms a cold room's history on this pod
//!   and serves resumes older than the in-memory ring, from the Redis list
//!   and MongoDB, so no worker ever blocks on either.

pub mod loader;
pub mod mongo;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};

use crate::chat::protocol::ChatMessage;
use crate::state::ServerState;

/// The way into the writer thread.
#[derive(Debug, Clone)]
pub struct StoreSender {
    tx: Sender<ChatMessage>,
    state: Arc<ServerState>,
}

impl StoreSender {
    /// Wraps the writer's channel.
    pub fn new(tx: Sender<ChatMessage>, state: Arc<ServerState>) -> StoreSender {
        StoreSender { tx, state }
    }

    /// Queues `msg` for writing; never blocks.
    pub fn enqueue(&self, msg: ChatMessage) {
        let m = &self.state.metrics.backend;
        match self.tx.try_send(msg) {
            Ok(()) => {
                m.mongo_queue.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(msg)) | Err(TrySendError::Disconnected(msg)) => {
                let dropped = m.mongo_dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped.is_power_of_two() {
                    log::error!(
                        "MongoDB queue full ({} messages): dropped room={} seq={} (dropped so far: {dropped})",
                        self.state.config.mongo_queue_max,
                        msg.room,
                        msg.seq
                    );
                }
            }
        }
    }
}
