//! Persistence of chat messages (MongoDB, replica-set aware).
//!
//! The sequencer hands each message it sequenced on this pod to a
//! [`StoreSender`]; a dedicated writer thread batches them into MongoDB.
//! A full queue drops the message, counts it and logs it loudly: the
//! bound (`MONGO_QUEUE_MAX`) keeps a long MongoDB outage from taking the
//! pod's memory.

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
