//! Inbox: how other threads hand work to a worker.
//!
//! A crossbeam channel plus the worker's one `mio::Waker` (one per Poll, as
//! mio requires). `notified` saves wake-up syscalls: a sender wakes the
//! worker only if no wake is already pending; the worker clears the flag
//! *before* draining the channel, so a message sent during the drain
//! either is seen by it or causes a new wake. Nothing is lost.
//!
//! The channel is bounded ([`INBOX_MAX`]). At the bound:
//! - a broadcast (or a room's resync) is not queued, and from then on no
//!   broadcast is, until the worker has handled everything queued before
//!   it: the inbox is *overflowed*. The worker, finding its inbox empty and
//!   overflowed, closes every chat connection it has with 1012, and they
//!   resume with `since` (from the ring or MongoDB) — nothing is lost, and
//!   nothing is delivered out of order. Dropping rather than blocking keeps
//!   one overloaded worker from stalling the sequencer, which feeds every
//!   worker (in replica mode, the Redis subscription itself). Each broadcast
//!   not queued is counted (`websocket_inbox_dropped_total`) and each
//!   overflow logged;
//! - any other message (a reject, a loaded history, the drain order) is
//!   one connection's answer, rare and small: the sender waits for room.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
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

/// Messages a worker's inbox holds (a broadcast is about 50 bytes here).
pub const INBOX_MAX: usize = 131_072;

/// The sending side, cloned into every thread that feeds this worker.
#[derive(Debug, Clone)]
pub struct InboxSender {
    tx: Sender<ToWorker>,
    waker: Arc<Waker>,
    notified: Arc<AtomicBool>,
    /// Broadcasts are being dropped until the worker resyncs its clients.
    overflowed: Arc<AtomicBool>,
    /// Broadcasts not queued (at the bound, or while overflowed).
    dropped: Arc<AtomicU64>,
}

/// The worker's side.
#[derive(Debug)]
pub struct Inbox {
    rx: Receiver<ToWorker>,
    notified: Arc<AtomicBool>,
    overflowed: Arc<AtomicBool>,
}

/// A connected pair for the worker whose Poll owns `waker`, bounded at [`INBOX_MAX`].
pub fn inbox(waker: Waker) -> (InboxSender, Inbox) {
    bounded_inbox(waker, INBOX_MAX)
}

/// A connected pair holding at most `capacity` messages.
pub fn bounded_inbox(waker: Waker, capacity: usize) -> (InboxSender, Inbox) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    let notified = Arc::new(AtomicBool::new(false));
    let overflowed = Arc::new(AtomicBool::new(false));
    let sender = InboxSender {
        tx,
        waker: Arc::new(waker),
        notified: notified.clone(),
        overflowed: overflowed.clone(),
        dropped: Arc::new(AtomicU64::new(0)),
    };
    (sender, Inbox { rx, notified, overflowed })
}

impl InboxSender {
    /// Queues `msg` and wakes the worker if it may be asleep. At the bound,
    /// a broadcast is dropped and the inbox marked overflowed (see the
    /// module's doc); any other message waits for room.
    pub fn send(&self, msg: ToWorker) {
        if matches!(msg, ToWorker::Broadcast { .. } | ToWorker::Resync { .. }) {
            // Acquire: pairs with the worker's clearing, after which it has
            // resynced its clients and new broadcasts may be queued again.
            if self.overflowed.load(Ordering::Acquire) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match self.tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    if !self.overflowed.swap(true, Ordering::AcqRel) {
                        log::warn!(
                            "a worker's inbox is full ({} messages): its chat clients will be closed with 1012 to resume",
                            self.tx.len()
                        );
                    }
                }
                Err(TrySendError::Disconnected(_)) => return, // the worker has exited
            }
        } else if self.tx.send(msg).is_err() {
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

    /// Broadcasts not queued so far (overflows).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Inbox {
    /// Call on a waker event, before draining.
    pub fn clear_notified(&self) {
        self.notified.store(false, Ordering::Release);
    }

    /// Call when the inbox was found empty: whether broadcasts were dropped
    /// since the last call. Everything queued before the first drop has
    /// been handled then (nothing is queued while overflowed), so the
    /// worker resyncs its clients, after which broadcasts flow again.
    pub fn take_overflow(&self) -> bool {
        self.overflowed.load(Ordering::Acquire) && self.overflowed.swap(false, Ordering::AcqRel)
    }

    /// The next waiting message, if any.
    pub fn try_recv(&self) -> Option<ToWorker> {
        match self.rx.try_recv() {
            Ok(m) => Some(m),
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broadcast(seq: u64) -> ToWorker {
        ToWorker::Broadcast { room: Arc::from("r"), entry: Entry::new(seq, "{}"), deflated: None }
    }

    fn seq(m: Option<ToWorker>) -> Option<u64> {
        match m {
            Some(ToWorker::Broadcast { entry, .. }) => Some(entry.seq),
            _ => None,
        }
    }

    #[test]
    fn at_the_bound_broadcasts_are_dropped_counted_and_flagged_until_the_worker_resyncs() {
        let poll = mio::Poll::new().unwrap();
        let (tx, rx) = bounded_inbox(Waker::new(poll.registry(), mio::Token(0)).unwrap(), 2);
        tx.send(broadcast(1));
        tx.send(broadcast(2));
        tx.send(broadcast(3)); // full: dropped, overflowed
        assert_eq!((tx.dropped(), tx.len()), (1, 2));
        assert_eq!(seq(rx.try_recv()), Some(1));
        tx.send(broadcast(4)); // room again, but after a hole: dropped too
        assert_eq!(tx.dropped(), 2);
        assert_eq!(seq(rx.try_recv()), Some(2));
        assert_eq!(seq(rx.try_recv()), None);
        assert!(rx.take_overflow(), "the worker, finding it empty, resyncs its clients");
        assert!(!rx.take_overflow(), "once");
        tx.send(broadcast(5));
        assert_eq!(seq(rx.try_recv()), Some(5), "after the resync broadcasts flow again");
        assert_eq!(tx.dropped(), 2);
    }

    #[test]
    fn other_messages_wait_for_room_instead_of_being_dropped() {
        let poll = mio::Poll::new().unwrap();
        let (tx, rx) = bounded_inbox(Waker::new(poll.registry(), mio::Token(0)).unwrap(), 1);
        tx.send(broadcast(1));
        let sender = std::thread::spawn(move || {
            tx.send(ToWorker::Drain);
            tx
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!sender.is_finished(), "a full inbox makes the drain order wait");
        assert_eq!(seq(rx.try_recv()), Some(1));
        let tx = sender.join().unwrap();
        assert!(matches!(rx.try_recv(), Some(ToWorker::Drain)));
        assert_eq!(tx.dropped(), 0);
    }
}
