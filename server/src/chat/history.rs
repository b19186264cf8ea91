//! History: each room's recent messages, kept in memory as the chat frames
//! that were delivered, so a join's history and a `since` resume are
//! concatenations of stored bytes, never re-serialisations.
//!
//! Written by one thread only, the sequencer of this pod (the embedded hub,
//! or the Redis subscriber in replica mode), in seq order, *before* the
//! message is handed to the workers. Workers read snapshots when a client
//! joins. That order is what makes joins exact: a worker that takes a
//! snapshot with `last_seq = L` has seen, or will see in its inbox, every
//! message after `L`, and skips any at or below `L` that were still queued.
//!
//! Memory is bounded twice: `ring` messages per room, and `max_bytes` over
//! all rooms, beyond which the rooms appended to least recently lose their
//! stored messages (their `last_seq` is kept, so sequencing never restarts
//! and a resume into the lost range says `recovered: false`). The rooms
//! holding messages are kept in append order (`Rooms::lru`), so finding the
//! one to evict costs O(log rooms) under the lock, not a scan of every room.
//!
//! With a store behind it (Redis lists and/or MongoDB), history on one pod
//! can be *cold*: a pod that just started has not seen the messages sent
//! before it. Each room then carries two facts:
//! - `known`: `last_seq` is the room's true latest seq (set by any message
//!   seen live, or by a load) — needed before this pod may sequence;
//! - `complete`: the ring holds the room's latest messages without a hole
//!   (set by a load; lost by eviction or an unfillable gap).
//!
//! A join into a room that is not complete, or a resume from before the
//! ring, is answered after the history loader has fetched what is missing
//! ([`History::needs_load`], [`History::merge_recent`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::ws::encoder;
use crate::ws::OpCode;

/// One stored message: its seq and its complete chat frame.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The message's seq in its room.
    pub seq: u64,
    /// The WebSocket text frame (header and JSON), shared with every recipient.
    pub frame: Arc<[u8]>,
    /// Where the JSON text starts inside `frame`.
    json_start: u8,
}

impl Entry {
    /// Frames `json` once and keeps it under `seq`.
    pub fn new(seq: u64, json: &str) -> Entry {
        let frame = encoder::frame(OpCode::Data(crate::ws::Data::Text), json.as_bytes());
        let json_start = (frame.len() - json.len()) as u8;
        Entry { seq, frame: frame.into(), json_start }
    }

    /// The chat frame's JSON text.
    pub fn json(&self) -> &[u8] {
        &self.frame[self.json_start as usize..]
    }
}

/// What a message arriving from the subscription is, for its room here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next seq (or the first this pod sees of the room): deliver it.
    Next,
    /// At or below the last seq: already delivered (after a gap fill).
    Duplicate,
    /// Messages after `after` are missing before this one: fill first.
    Gap {
        /// The last seq delivered here.
        after: u64,
    },
}

/// What a joining client is sent, taken atomically with respect to appends.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The room's latest seq at the moment of the snapshot.
    pub last_seq: u64,
    /// The history to send, oldest first.
    pub entries: Vec<Entry>,
    /// With `since`: whether every message after it is in `entries`.
    pub recovered: Option<bool>,
}

#[derive(Debug, Default)]
struct RoomLog {
    /// The newest messages, oldest first, at most `ring`, contiguous seqs.
    entries: VecDeque<Entry>,
    /// The room's latest seq (kept when entries are evicted).
    last_seq: u64,
    /// `last_seq` is the room's true latest seq.
    known: bool,
    /// `entries` are the room's latest messages, with nothing missing before
    /// them that the ring could hold.
    complete: bool,
    /// Value of `Rooms::appends` at this room's last append (for eviction).
    last_append: u64,
}

#[derive(Debug, Default)]
struct Rooms {
    logs: HashMap<Arc<str>, RoomLog>,
    /// `(last_append, room)` of every room whose `entries` are not empty,
    /// oldest append first: the eviction order. Kept in step by
    /// [`Rooms::relist`] wherever entries or `last_append` change.
    lru: BTreeSet<(u64, Arc<str>)>,
    /// Frame bytes held over all rooms.
    bytes: usize,
    /// Appends so far: a logical clock for least-recently-appended eviction.
    appends: u64,
}

impl Rooms {
    /// Puts `room` back in step in the eviction order after its entries or
    /// `last_append` changed; `listed` is the key it was listed under
    /// before (its `last_append` then, if it held entries).
    fn relist(&mut self, room: &Arc<str>, listed: Option<u64>) {
        if let Some(tick) = listed {
            self.lru.remove(&(tick, room.clone()));
        }
        if let Some(log) = self.logs.get(&**room).filter(|l| !l.entries.is_empty()) {
            self.lru.insert((log.last_append, room.clone()));
        }
    }
}

/// What stands behind this pod's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Nothing: memory is the only copy (single node without MongoDB).
    /// Every room is always known and complete.
    Memory,
    /// Redis lists and/or MongoDB: rooms start cold and are loaded.
    /// `deep` is true when MongoDB can serve resumes older than the ring.
    Store {
        /// MongoDB holds every message.
        deep: bool,
    },
}

/// Whether a resume after `since` needs messages before `first` (the
/// oldest held): `since + 1 < first`, without overflow for any `since`
/// (a client may send up to `u64::MAX`).
pub fn reaches_below(since: u64, first: u64) -> bool {
    since.checked_add(1).is_some_and(|next| next < first)
}

/// Every room's recent messages on this pod.
#[derive(Debug)]
pub struct History {
    ring: usize,
    max_bytes: usize,
    backing: Backing,
    rooms: Mutex<Rooms>,
}

impl History {
    /// Keeps `ring` messages per room and at most `max_bytes` in all.
    pub fn new(ring: usize, max_bytes: usize, backing: Backing) -> History {
        History { ring: ring.max(1), max_bytes, backing, rooms: Mutex::new(Rooms::default()) }
    }

    /// Messages kept per room.
    pub fn ring(&self) -> usize {
        self.ring
    }

    /// What stands behind it.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    fn new_log(&self) -> RoomLog {
        let in_memory = self.backing == Backing::Memory;
        RoomLog { known: in_memory, complete: in_memory, ..RoomLog::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Rooms> {
        // A panic elsewhere while holding the lock leaves the maps consistent
        // (every mutation below is a single push/pop), so poisoning is ignored.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The room's latest seq (0 if it has none).
    pub fn last_seq(&self, room: &str) -> u64 {
        self.lock().logs.get(room).map_or(0, |l| l.last_seq)
    }

    /// The room's latest seq if this pod knows it (it may sequence then).
    pub fn known_last_seq(&self, room: &str) -> Option<u64> {
        let rooms = self.lock();
        match rooms.logs.get(room) {
            Some(l) if l.known => Some(l.last_seq),
            Some(_) => None,
            None => (self.backing == Backing::Memory).then_some(0),
        }
    }

    /// Appends the next message of `room`: `make(seq)` builds it with
    /// `seq = last_seq + 1`. Embedded sequencer only. `None` (nothing
    /// appended) if the room's latest seq is not known yet.
    pub fn append_next(&self, room: &Arc<str>, make: impl FnOnce(u64) -> Entry) -> Option<Entry> {
        let mut rooms = self.lock();
        let log = match rooms.logs.get(&**room) {
            Some(l) => l,
            None => {
                let fresh = self.new_log();
                rooms.logs.entry(room.clone()).or_insert(fresh)
            }
        };
        if !log.known {
            return None;
        }
        let entry = make(log.last_seq + 1);
        self.push(&mut rooms, room, entry.clone());
        Some(entry)
    }

    /// What a sequenced message from the subscription means for `room`.
    pub fn classify(&self, room: &str, seq: u64) -> Arrival {
        let rooms = self.lock();
        match rooms.logs.get(room) {
            Some(l) if l.known && seq <= l.last_seq => Arrival::Duplicate,
            Some(l) if l.known && seq > l.last_seq + 1 => Arrival::Gap { after: l.last_seq },
            _ => Arrival::Next,
        }
    }

    /// Appends `entry` (Redis assigned its seq): the next one, or the first
    /// this pod sees of the room. Subscriber thread only.
    pub fn append(&self, room: &Arc<str>, entry: Entry) {
        let mut rooms = self.lock();
        self.push(&mut rooms, room, entry);
    }

    /// A gap before `next_seq` could not be filled: the ring restarts at
    /// `next_seq` and the room is no longer complete (joins load again).
    pub fn restart_after_gap(&self, room: &Arc<str>, next_seq: u64) {
        let mut rooms = self.lock();
        let fresh = self.new_log();
        let log = rooms.logs.entry(room.clone()).or_insert(fresh);
        let listed = (!log.entries.is_empty()).then_some(log.last_append);
        let freed: usize = log.entries.drain(..).map(|e| e.frame.len()).sum();
        log.last_seq = next_seq - 1;
        log.known = true;
        log.complete = false;
        rooms.bytes -= freed;
        rooms.relist(room, listed);
    }

    fn push(&self, rooms: &mut Rooms, room: &Arc<str>, entry: Entry) {
        rooms.appends += 1;
        let tick = rooms.appends;
        let fresh = self.new_log();
        let log = rooms.logs.entry(room.clone()).or_insert(fresh);
        let listed = (!log.entries.is_empty()).then_some(log.last_append);
        debug_assert!(
            !log.known || entry.seq == log.last_seq + 1,
            "seq {} after {} in {room}",
            entry.seq,
            log.last_seq
        );
        if log.entries.back().is_some_and(|e| e.seq + 1 != entry.seq) {
            // Not contiguous with what is stored (first sight of a cold room's
            // live traffic after stale entries): keep only what is contiguous.
            let freed: usize = log.entries.drain(..).map(|e| e.frame.len()).sum();
            rooms.bytes -= freed;
            log.complete = false;
        }
        let log = rooms.logs.get_mut(&**room).expect("just inserted");
        log.last_seq = entry.seq;
        log.known = true;
        log.last_append = tick;
        let mut freed = 0;
        let added = entry.frame.len();
        log.entries.push_back(entry);
        while log.entries.len() > self.ring {
            freed += log.entries.pop_front().map_or(0, |e| e.frame.len());
        }
        rooms.bytes = rooms.bytes + added - freed;
        rooms.relist(room, listed);
        while rooms.bytes > self.max_bytes {
            // Evict the stored messages of the room appended to least recently.
            let Some((_, victim)) = rooms.lru.pop_first() else {
                break;
            };
            let log = rooms.logs.get_mut(&victim).expect("victim exists");
            let bytes: usize = log.entries.drain(..).map(|e| e.frame.len()).sum();
            if self.backing != Backing::Memory {
                log.complete = false; // a join reloads it from the store
            }
            rooms.bytes -= bytes;
            log::warn!("history over its memory bound: dropped the stored messages of room {victim} ({bytes} bytes)");
        }
    }

    /// Whether a join into `room` (resuming after `since`) must wait for the
    /// history loader: the room is not complete here, or the resume reaches
    /// back before the ring and MongoDB may have what is older.
    pub fn needs_load(&self, room: &str, since: Option<u64>) -> bool {
        let Backing::Store { deep } = self.backing else { return false };
        let rooms = self.lock();
        let Some(log) = rooms.logs.get(room) else { return true };
        if !log.complete {
            return true;
        }
        let first = log.entries.front().map_or(log.last_seq + 1, |e| e.seq);
        deep && since.is_some_and(|s| reaches_below(s, first))
    }

    /// The seq of the oldest stored message of `room` (or what it would be).
    pub fn first_seq(&self, room: &str) -> u64 {
        let rooms = self.lock();
        rooms.logs.get(room).map_or(1, |l| l.entries.front().map_or(l.last_seq + 1, |e| e.seq))
    }

    /// The stored messages of `room` after `since`, oldest first, and the
    /// seq the ring starts at (`last_seq + 1` when it holds nothing).
    pub fn held_after(&self, room: &str, since: u64) -> (Vec<Entry>, u64) {
        let rooms = self.lock();
        let Some(log) = rooms.logs.get(room) else { return (Vec::new(), 1) };
        let first = log.entries.front().map_or(log.last_seq.saturating_add(1), |e| e.seq);
        (log.entries.iter().filter(|e| e.seq > since).cloned().collect(), first)
    }

    /// Merges loaded messages (from Redis or MongoDB, any order, possibly
    /// overlapping what is stored) under the ring: afterwards the ring holds
    /// the longest contiguous run ending at the room's latest message, and
    /// the room is known and complete.
    pub fn merge_recent(&self, room: &Arc<str>, loaded: Vec<Entry>) {
        let mut rooms = self.lock();
        let fresh = self.new_log();
        let log = rooms.logs.entry(room.clone()).or_insert(fresh);
        let held_before: usize = log.entries.iter().map(|e| e.frame.len()).sum();
        let mut all: Vec<Entry> = log.entries.drain(..).chain(loaded).collect();
        all.sort_by_key(|e| e.seq);
        all.dedup_by_key(|e| e.seq);
        let latest = all.last().map_or(log.last_seq, |e| e.seq).max(log.last_seq);
        // Keep the contiguous run that ends at `latest`, at most `ring` long.
        let mut start = all.len();
        while start > 0 && all[start - 1].seq + (all.len() - start) as u64 == latest && all.len() - start < self.ring {
            start -= 1;
        }
        let kept = all.split_off(start);
        let held_after: usize = kept.iter().map(|e| e.frame.len()).sum();
        let listed = (held_before > 0).then_some(log.last_append);
        log.entries = kept.into();
        log.last_seq = latest;
        log.known = true;
        log.complete = true;
        rooms.bytes = rooms.bytes + held_after - held_before;
        rooms.relist(room, listed);
    }

    /// What a client joining `room` is sent: with `since`, every message
    /// after it (from `older`, fetched from MongoDB, then the ring);
    /// otherwise the last `on_join` messages.
    pub fn snapshot(&self, room: &str, since: Option<u64>, on_join: usize, older: &[Entry]) -> Snapshot {
        let rooms = self.lock();
        let Some(log) = rooms.logs.get(room) else {
            return Snapshot { last_seq: 0, entries: Vec::new(), recovered: since.map(|s| s == 0) };
        };
        let last_seq = log.last_seq;
        let Some(s) = since else {
            let skip = log.entries.len().saturating_sub(on_join);
            return Snapshot { last_seq, entries: log.entries.iter().skip(skip).cloned().collect(), recovered: None };
        };
        if s >= last_seq {
            // Nothing missed; a `since` beyond `last_seq` means this room's
            // sequence restarted (a single node without MongoDB restarted).
            return Snapshot { last_seq, entries: Vec::new(), recovered: Some(s == last_seq) };
        }
        let ring_first = log.entries.front().map_or(last_seq + 1, |e| e.seq);
        let mut entries: Vec<Entry> = older.iter().filter(|e| e.seq > s && e.seq < ring_first).cloned().collect();
        entries.extend(log.entries.iter().filter(|e| e.seq > s).cloned());
        // Recovered: exactly s+1 ..= last_seq, nothing missing in between.
        let recovered = entries.first().is_some_and(|e| Some(e.seq) == s.checked_add(1))
            && entries.last().is_some_and(|e| e.seq == last_seq)
            && entries.windows(2).all(|w| w[1].seq == w[0].seq + 1);
        Snapshot { last_seq, entries, recovered: Some(recovered) }
    }

    /// The last `limit` messages of `room`, newest first.
    pub fn recent(&self, room: &str, limit: usize) -> Vec<Entry> {
        let rooms = self.lock();
        rooms.logs.get(room).map_or_else(Vec::new, |l| l.entries.iter().rev().take(limit).cloned().collect())
    }

    /// Every room whose latest seq is known here, with that seq.
    pub fn known_rooms(&self) -> Vec<(Arc<str>, u64)> {
        let rooms = self.lock();
        rooms.logs.iter().filter(|(_, l)| l.known).map(|(r, l)| (r.clone(), l.last_seq)).collect()
    }

    /// Forgets `room` (replica mode, once this pod stopped listening to it):
    /// it is neither known nor complete any more, so the next join loads it.
    pub fn forget(&self, room: &str) {
        let mut rooms = self.lock();
        if let Some(log) = rooms.logs.remove(room) {
            rooms.bytes -= log.entries.iter().map(|e| e.frame.len()).sum::<usize>();
        }
    }

    /// Rooms with any stored message or seq, and frame bytes held.
    pub fn usage(&self) -> (usize, usize) {
        let rooms = self.lock();
        (rooms.logs.len(), rooms.bytes)
    }
}

#[cfg(test)]
#[path = "history_tests.rs"]
mod tests;
