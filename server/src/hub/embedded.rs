//! The embedded sequencer: one thread that gives each message its room's
//! next seq, stores it in history and fans it out. The single-node mode
//! (no Redis), and the default `cargo run` starts.
//!
//! It also remembers the `clientId`s it sequenced ([`ClientIds`]), for as
//! long as Redis remembers them in replica mode (`DEDUPE_TTL_SECS`), so a
//! client's resend of a message is published once in both modes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::{fan_out, HubCommand, IdGen, Origin, Publish};
use crate::channels::{LoadRequest, SequencerHandles, StoreSender};
use crate::chat::history::Entry;
use crate::chat::protocol::{ChatMessage, Reject};
use crate::hub::inbox::ToWorker;

/// Starts the sequencer thread; it exits after [`HubCommand::Stop`].
pub fn spawn(state: SequencerHandles, rx: Receiver<HubCommand>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("hub".into()).spawn(move || {
        let ids = IdGen::new();
        let pod: Arc<str> = Arc::from(state.pod_name.as_str());
        let mut seen = ClientIds::new(CLIENT_IDS_MAX, Duration::from_secs(crate::replica::DEDUPE_TTL_SECS));
        for cmd in rx.iter() {
            match cmd {
                HubCommand::Publish(p) => sequence(&state, &ids, &pod, &mut seen, p, state.store.as_ref()),
                HubCommand::Stop => break,
            }
        }
        log::debug!("hub stopped");
    })
}

fn sequence(
    state: &SequencerHandles,
    ids: &IdGen,
    pod: &Arc<str>,
    seen: &mut ClientIds,
    p: Publish,
    store: Option<&StoreSender>,
) {
    if let Some(client_id) = &p.client_id {
        if let Some(seq) = seen.get(&p.room, client_id) {
            // A resend (after a reconnect) of a message already sequenced: its
            // sender sees that one, live or in its resume's history.
            state.metrics.backend.deduplicated.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::debug!("message with clientId {client_id:?} already sequenced as {seq} in room {}", p.room);
            return;
        }
    }
    let mut msg = ChatMessage {
        room: p.room.to_string(),
        seq: 0,
        id: ids.next_id(),
        username: p.username,
        message: p.message,
        pod_name: pod.to_string(),
        timestamp_ms: p.timestamp_ms,
        client_id: p.client_id,
        user_id: p.user_id,
    };
    let Some(entry) = state.history.append_next(&p.room, |seq| {
        msg.seq = seq;
        Entry::new(seq, &msg.to_json())
    }) else {
        // The room's latest seq is not loaded from MongoDB yet: numbering it
        // now could reuse a stored seq. Refuse, and load it.
        refuse_unknown_room(state, &p.room, p.origin);
        return;
    };
    if let Some(client_id) = &msg.client_id {
        seen.insert(&p.room, client_id, msg.seq);
    }
    fan_out(&state.workers, &p.room, &entry);
    state.metrics.backend.fanned_out.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Some(store) = store {
        store.enqueue(msg);
    }
}

fn refuse_unknown_room(state: &SequencerHandles, room: &Arc<str>, origin: Origin) {
    if let Some(inbox) = state.workers.inboxes.get(origin.worker) {
        let reject = Reject::new("unavailable", "the room's history is loading on this server; retry in a moment");
        inbox.send(ToWorker::Reject { key: origin.key, conn_id: origin.conn_id, reject });
    }
    if let Some(loader) = &state.loader {
        let _ = loader.try_send(LoadRequest { room: room.clone(), since: None, last: None, reply: None });
    }
}

/// Client ids remembered at most (the window shrinks below the TTL only
/// past this many messages with a `clientId` in `DEDUPE_TTL_SECS`).
const CLIENT_IDS_MAX: usize = 100_000;

/// The `clientId`s sequenced recently, per room, with their seq: each is
/// remembered for `ttl`, and at most `max` of them (the oldest go first).
#[derive(Debug)]
pub struct ClientIds {
    /// Room → client id → seq (looked up by `&str`, without allocating).
    rooms: HashMap<Arc<str>, HashMap<Box<str>, u64>>,
    /// Insertion order, for expiry.
    order: VecDeque<(Instant, Arc<str>, Box<str>)>,
    max: usize,
    ttl: Duration,
}

impl ClientIds {
    /// Remembers at most `max` ids, each for `ttl`.
    pub fn new(max: usize, ttl: Duration) -> ClientIds {
        ClientIds { rooms: HashMap::new(), order: VecDeque::new(), max, ttl }
    }

    /// The seq `client_id` was given in `room`, if it is still remembered.
    pub fn get(&mut self, room: &str, client_id: &str) -> Option<u64> {
        self.expire(Instant::now());
        self.rooms.get(room)?.get(client_id).copied()
    }

    /// Remembers that `client_id` was given `seq` in `room`.
    pub fn insert(&mut self, room: &Arc<str>, client_id: &str, seq: u64) {
        let now = Instant::now();
        self.expire(now);
        while self.order.len() >= self.max {
            self.forget_oldest();
        }
        if self.rooms.entry(room.clone()).or_default().insert(Box::from(client_id), seq).is_none() {
            self.order.push_back((now, room.clone(), Box::from(client_id)));
        }
    }

    fn expire(&mut self, now: Instant) {
        while self.order.front().is_some_and(|(at, _, _)| now.duration_since(*at) >= self.ttl) {
            self.forget_oldest();
        }
    }

    fn forget_oldest(&mut self) {
        let Some((_, room, id)) = self.order.pop_front() else { return };
        if let Some(ids) = self.rooms.get_mut(&room) {
            ids.remove(&id);
            if ids.is_empty() {
                self.rooms.remove(&room);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_ids_are_per_room_bounded_and_expire() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let mut ids = ClientIds::new(2, Duration::from_secs(600));
        ids.insert(&a, "x", 1);
        assert_eq!(ids.get(&a, "x"), Some(1));
        assert_eq!(ids.get(&b, "x"), None, "another room's id is another message");
        ids.insert(&a, "y", 2);
        ids.insert(&a, "z", 3);
        assert_eq!(ids.get(&a, "x"), None, "the oldest is forgotten past the bound");
        assert_eq!((ids.get(&a, "y"), ids.get(&a, "z")), (Some(2), Some(3)));
        let mut short = ClientIds::new(10, Duration::ZERO);
        short.insert(&a, "x", 1);
        assert_eq!(short.get(&a, "x"), None, "expired");
    }
}
