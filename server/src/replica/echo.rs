//! Echoes: this pod's own messages between Redis's answer to its publisher
//! and their delivery back through its subscription.
//!
//! A message is stored in MongoDB by its origin pod when that pod
//! *delivers* it (live or from a gap fill), not when Redis answers: Redis
//! writes a script's reply before the publishes it queued, so if it dies in
//! between (a restart without persistence, a failover to a replica without
//! the last writes) the publisher holds a seq that no pod delivered and
//! that the next publish into the room may be given. Such a message is
//! published again — in doubt, so that if Redis kept it after all it is not
//! published twice — once its room has been subscribed again and caught up
//! (a newer [`LiveRooms`] generation than the one it was published under)
//! without it coming back: it gets a seq every pod then sees, and no seq is
//! stored that the clients saw as another message.
//!
//! The publisher and the subscriber race on each message (the reply and the
//! publish arrive at about the same time), so a delivery that comes first
//! is kept (`early`) until the answer is taken. A message not back within
//! [`AWAIT_MAX`] while its room was not subscribed again (its pod missed it
//! in a gap no fill could close, or its room lost its members) is stored as
//! answered; at shutdown every message still waiting is.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::LiveRooms;
use crate::channels::{Origin, StoreSender};
use crate::chat::protocol::ChatMessage;

/// Longest a message waits for its delivery before it is stored as answered.
pub const AWAIT_MAX: Duration = Duration::from_secs(60);

/// One of this pod's messages Redis answered, not delivered here yet.
#[derive(Debug)]
pub struct Awaiting {
    /// With the seq Redis answered.
    pub msg: ChatMessage,
    /// Its sender, to tell if it is refused when published again.
    pub origin: Origin,
    /// Its room's [`LiveRooms`] generation when it was published.
    generation: u64,
    at: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    /// By message id.
    awaiting: HashMap<String, Awaiting>,
    /// Ids delivered before their answer was taken, and when.
    early: HashMap<String, Instant>,
}

/// See the module doc. Shared by the publisher and the subscriber.
#[derive(Debug)]
pub struct Echoes {
    pod: String,
    store: Option<StoreSender>,
    inner: Mutex<Inner>,
}

impl Echoes {
    /// For the pod `pod`, storing into `store` (if MongoDB is configured).
    pub fn new(pod: String, store: Option<StoreSender>) -> Echoes {
        Echoes { pod, store, inner: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change below is one map operation: a panic leaves them whole.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn store(&self, msg: ChatMessage) {
        if let Some(store) = &self.store {
            store.enqueue(msg);
        }
    }

    /// Redis answered `msg.seq` for a message published under its room's
    /// `generation`. Publisher thread.
    pub fn answered(&self, msg: ChatMessage, origin: Origin, generation: u64) {
        let mut inner = self.lock();
        if inner.early.remove(&msg.id).is_some() {
            drop(inner);
            self.store(msg);
        } else {
            inner.awaiting.insert(msg.id.clone(), Awaiting { msg, origin, generation, at: Instant::now() });
        }
    }

    /// The subscriber delivered `msg` here (live or from a fill).
    pub fn delivered(&self, msg: &ChatMessage) {
        if msg.pod_name != self.pod {
            return;
        }
        let mut inner = self.lock();
        match inner.awaiting.remove(&msg.id) {
            Some(a) => {
                drop(inner);
                self.store(ChatMessage { seq: msg.seq, ..a.msg });
            }
            None => {
                inner.early.insert(msg.id.clone(), Instant::now());
            }
        }
    }

    /// The messages to publish again: their room was subscribed again and
    /// caught up since they were published, and they did not come back.
    /// Stores as answered those waiting longer than [`AWAIT_MAX`] otherwise.
    pub fn take_lost(&self, live: &LiveRooms) -> Vec<Awaiting> {
        let mut inner = self.lock();
        inner.early.retain(|_, at| at.elapsed() < AWAIT_MAX);
        let (mut lost, mut stale) = (Vec::new(), Vec::new());
        let ids: Vec<String> = inner.awaiting.keys().cloned().collect();
        for id in ids {
            let a = &inner.awaiting[&id];
            if live.generation(&a.msg.room).is_some_and(|g| g > a.generation) {
                lost.extend(inner.awaiting.remove(&id));
            } else if a.at.elapsed() >= AWAIT_MAX {
                stale.extend(inner.awaiting.remove(&id));
            }
        }
        drop(inner);
        for a in stale {
            log::info!(
                "message {} (room {}, seq {}) did not come back through the subscription in {AWAIT_MAX:?}; stored as answered",
                a.msg.id,
                a.msg.room,
                a.msg.seq
            );
            self.store(a.msg);
        }
        lost
    }

    /// Stores every message still waiting, as answered (shutdown).
    pub fn flush(&self) {
        let waiting: Vec<Awaiting> = self.lock().awaiting.drain().map(|(_, a)| a).collect();
        for a in waiting {
            self.store(a.msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::Metrics;

    fn msg(id: &str, pod: &str, seq: u64) -> ChatMessage {
        ChatMessage {
            room: "r".into(),
            seq,
            id: id.into(),
            username: "u".into(),
            message: "m".into(),
            pod_name: pod.into(),
            timestamp_ms: 0,
            client_id: None,
            user_id: None,
        }
    }

    const ORIGIN: Origin = Origin { worker: 0, key: 0, conn_id: 0 };

    fn echoes() -> (Echoes, crossbeam_channel::Receiver<ChatMessage>) {
        let (tx, rx) = crossbeam_channel::bounded(16);
        let store = StoreSender::new(tx, Arc::new(Metrics::new(1)), 16);
        (Echoes::new("p".into(), Some(store)), rx)
    }

    fn stored(rx: &crossbeam_channel::Receiver<ChatMessage>) -> Vec<(String, u64)> {
        rx.try_iter().map(|m| (m.id, m.seq)).collect()
    }

    #[test]
    fn a_message_is_stored_once_it_is_answered_and_delivered_in_either_order() {
        let (e, rx) = echoes();
        e.answered(msg("a", "p", 5), ORIGIN, 1);
        assert!(stored(&rx).is_empty(), "not before it comes back");
        e.delivered(&msg("a", "p", 5));
        // The subscriber can be first: the answer then stores it.
        e.delivered(&msg("b", "p", 6));
        assert_eq!(stored(&rx), vec![("a".to_string(), 5)]);
        e.answered(msg("b", "p", 6), ORIGIN, 1);
        assert_eq!(stored(&rx), vec![("b".to_string(), 6)]);
        // Another pod's message is that pod's to store.
        e.delivered(&msg("c", "q", 7));
        e.answered(msg("c", "p", 7), ORIGIN, 1);
        assert!(stored(&rx).is_empty());
        e.flush();
        assert_eq!(stored(&rx), vec![("c".to_string(), 7)], "c waited for its own delivery here");
    }

    #[test]
    fn a_message_not_back_when_its_room_is_live_again_is_published_again_and_the_rest_stored_at_shutdown() {
        let (e, rx) = echoes();
        let live = LiveRooms::default();
        let room: Arc<str> = Arc::from("r");
        live.set(&room, true);
        let first = live.generation("r").unwrap();
        e.answered(msg("x", "p", 5), ORIGIN, first);
        assert!(e.take_lost(&live).is_empty(), "same generation: it may still come");
        live.set(&room, false);
        assert!(e.take_lost(&live).is_empty(), "not subscribed: it waits");
        live.set(&room, true);
        e.answered(msg("y", "p", 6), ORIGIN, live.generation("r").unwrap());
        let lost = e.take_lost(&live);
        assert_eq!(lost.iter().map(|a| a.msg.id.as_str()).collect::<Vec<_>>(), vec!["x"]);
        assert!(stored(&rx).is_empty(), "x is not stored under the seq Redis lost");
        e.flush();
        assert_eq!(stored(&rx), vec![("y".to_string(), 6)], "at shutdown: as answered");
    }
}
