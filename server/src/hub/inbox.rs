//! Inbox: how other threads hand work to a worker.
//!
//! A crossbeam channel plus the worker's one `mio::Waker` (one per Poll, as
//! mio requires). `notified` saves wake-up syscalls: a sender wakes the
//! worker only if no wake is already pending; the worker clears the flag
//! *before* draining the channel, so a message sent during the drain
//! either is seen by it or causes a new wake. Nothing is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use mio::Waker;

use crate::chat::history::Entry;
use crate::chat::protocol::Reject;

/// A message for a worker.
#[derive(Debug)]
pub enum ToWorker {
    /// Deliver `entry` to every local member of `room` (in seq order per room).
    Broadcast {
        /// The room.
        room: Arc<str>,
        /// The message, framed once.
        entry: Entry,
        /// The same message compressed and framed once (RSV1), for members
        /// that negotiated permessage-deflate; `None` when it is too short
        /// to compress or no connection negotiated it.
        deflated: Option<Arc<[u8]>>,
    },
    /// A message this connection sent could not be sequenced: tell it.
    Reject {
        /// Slab key of the connection.
        key: usize,
        /// Its id (the key may have been reused).
        conn_id: u64,
        /// The error frame.
        reject: Reject,
    },
    /// The room's sequence has a gap that could not be filled: make its
    /// local members reconnect and resume.
    Resync {
        /// The room.
        room: Arc<str>,
    },
    /// The history loader is done with this connection's room: finish its join.
    Loaded {
        /// Slab key of the connection.
        key: usize,
        /// Its id.
        conn_id: u64,
        /// Messages older than the ring that its `since` reaches (from MongoDB).
        older: Vec<Entry>,
    },
    /// Stop accepting and close every connection over the drain window.
    Drain,
}

/// The sending side, cloned into every thread that feeds this worker.
#[derive(Debug, Clone)]
pub struct InboxSender {
    tx: Sender<ToWorker>,
    waker: Arc<Waker>,
    notified: Arc<AtomicBool>,
}

/// The worker's side.
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<ToWorker>,
    notified: Arc<AtomicBool>,
}

/// A connected pair for the worker whose Poll owns `waker`.
pub fn inbox(waker: Waker) -> (InboxSender, Inbox) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let notified = Arc::new(AtomicBool::new(false));
    (InboxSender { tx, waker: Arc::new(waker), notified: notified.clone() }, Inbox { rx, notified })
}

impl InboxSender {
    /// Queues `msg` and wakes the worker if it may be asleep.
    pub fn send(&self, msg: ToWorker) {
        if self.tx.send(msg).is_err() {
            return; // the worker has exited (shutdown); nothing to deliver to
        }
        if !self.notified.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                log::error!("waking a worker failed: {e}");
            }
        }
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }
}

impl Inbox {
    /// Call on a waker event, before draining.
    pub fn clear_notified(&self) {
        self.notified.store(false, Ordering::Release);
    }

    /// The next waiting message, if any.
    pub fn try_recv(&self) -> Option<ToWorker> {
        match self.rx.try_recv() {
            Ok(m) => Some(m),
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => None,
        }
    }
}
