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
//! and a resume into the lost range says `recovered: false`).

use std::collections::{HashMap, VecDeque};
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
    /// The newest messages, oldest first, at most `ring`.
    entries: VecDeque<Entry>,
    /// The room's latest seq (kept when entries are evicted).
    last_seq: u64,
    /// Value of `Rooms::appends` at this room's last append (for eviction).
    last_append: u64,
}

#[derive(Debug, Default)]
struct Rooms {
    logs: HashMap<Arc<str>, RoomLog>,
    /// Frame bytes held over all rooms.
    bytes: usize,
    /// Appends so far: a logical clock for least-recently-appended eviction.
    appends: u64,
}

/// Every room's recent messages on this pod.
#[derive(Debug)]
pub struct History {
    ring: usize,
    max_bytes: usize,
    rooms: Mutex<Rooms>,
}

impl History {
    /// Keeps `ring` messages per room and at most `max_bytes` in all.
    pub fn new(ring: usize, max_bytes: usize) -> History {
        History { ring: ring.max(1), max_bytes, rooms: Mutex::new(Rooms::default()) }
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

    /// Appends the next message of `room`: `make(seq)` builds it with
    /// `seq = last_seq + 1`. Sequencer thread only. Returns the entry.
    pub fn append_next(&self, room: &Arc<str>, make: impl FnOnce(u64) -> Entry) -> Entry {
        let mut rooms = self.lock();
        let seq = rooms.logs.get(&**room).map_or(0, |l| l.last_seq) + 1;
        let entry = make(seq);
        self.push(&mut rooms, room, entry.clone());
        entry
    }

    /// Appends `entry`, whose seq must follow the room's last one.
    /// Sequencer thread only (replica mode, where Redis assigned the seq).
    pub fn append(&self, room: &Arc<str>, entry: Entry) {
        let mut rooms = self.lock();
        self.push(&mut rooms, room, entry);
    }

    fn push(&self, rooms: &mut Rooms, room: &Arc<str>, entry: Entry) {
        rooms.appends += 1;
        let tick = rooms.appends;
        let log = rooms.logs.entry(room.clone()).or_default();
        debug_assert!(entry.seq > log.last_seq, "seq {} after {} in {room}", entry.seq, log.last_seq);
        log.last_seq = entry.seq;
        log.last_append = tick;
        let mut freed = 0;
        let added = entry.frame.len();
        log.entries.push_back(entry);
        while log.entries.len() > self.ring {
            freed += log.entries.pop_front().map_or(0, |e| e.frame.len());
        }
        rooms.bytes = rooms.bytes + added - freed;
        while rooms.bytes > self.max_bytes {
            // Evict the stored messages of the room appended to least recently.
            let Some(victim) = rooms
                .logs
                .iter()
                .filter(|(_, l)| !l.entries.is_empty())
                .min_by_key(|(_, l)| l.last_append)
                .map(|(r, _)| r.clone())
            else {
                break;
            };
            let log = rooms.logs.get_mut(&victim).expect("victim exists");
            let bytes: usize = log.entries.drain(..).map(|e| e.frame.len()).sum();
            rooms.bytes -= bytes;
            log::warn!("history over its memory bound: dropped the stored messages of room {victim} ({bytes} bytes)");
        }
    }

    /// What a client joining `room` is sent: with `since`, every stored
    /// message after it; otherwise the last `on_join` messages.
    pub fn snapshot(&self, room: &str, since: Option<u64>, on_join: usize) -> Snapshot {
        let rooms = self.lock();
        let Some(log) = rooms.logs.get(room) else {
            return Snapshot { last_seq: 0, entries: Vec::new(), recovered: since.map(|s| s == 0) };
        };
        let last_seq = log.last_seq;
        match since {
            None => {
                let skip = log.entries.len().saturating_sub(on_join);
                Snapshot { last_seq, entries: log.entries.iter().skip(skip).cloned().collect(), recovered: None }
            }
            Some(s) if s >= last_seq => {
                // Nothing missed; a `since` beyond `last_seq` means this room's
                // sequence restarted (a single node without MongoDB restarted).
                Snapshot { last_seq, entries: Vec::new(), recovered: Some(s == last_seq) }
            }
            Some(s) => {
                let first = log.entries.front().map_or(last_seq + 1, |e| e.seq);
                let entries: Vec<Entry> = log.entries.iter().filter(|e| e.seq > s).cloned().collect();
                Snapshot { last_seq, entries, recovered: Some(first <= s + 1) }
            }
        }
    }

    /// The last `limit` messages of `room`, newest first.
    pub fn recent(&self, room: &str, limit: usize) -> Vec<Entry> {
        let rooms = self.lock();
        rooms.logs.get(room).map_or_else(Vec::new, |l| l.entries.iter().rev().take(limit).cloned().collect())
    }

    /// Rooms with any stored message or seq, and frame bytes held.
    pub fn usage(&self) -> (usize, usize) {
        let rooms = self.lock();
        (rooms.logs.len(), rooms.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(h: &History, room: &str, n: u64) {
        let room: Arc<str> = Arc::from(room);
        for _ in 0..n {
            h.append_next(&room, |seq| Entry::new(seq, &format!(r#"{{"seq":{seq}}}"#)));
        }
    }

    fn seqs(s: &Snapshot) -> Vec<u64> {
        s.entries.iter().map(|e| e.seq).collect()
    }

    #[test]
    fn seqs_start_at_one_and_rise_by_one_per_room() {
        let h = History::new(10, usize::MAX);
        fill(&h, "a", 3);
        fill(&h, "b", 1);
        assert_eq!(h.last_seq("a"), 3);
        assert_eq!(h.last_seq("b"), 1);
        assert_eq!(h.last_seq("c"), 0);
        assert_eq!(h.recent("a", 10).iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 2, 1]);
        assert_eq!(h.recent("a", 1)[0].json(), br#"{"seq":3}"#);
    }

    #[test]
    fn join_without_since_gets_the_last_n() {
        let h = History::new(10, usize::MAX);
        fill(&h, "a", 15);
        let s = h.snapshot("a", None, 4);
        assert_eq!((s.last_seq, seqs(&s), s.recovered), (15, vec![12, 13, 14, 15], None));
        assert_eq!(seqs(&h.snapshot("a", None, 50)).len(), 10, "bounded by the ring");
        let empty = h.snapshot("none", None, 4);
        assert_eq!((empty.last_seq, empty.entries.len()), (0, 0));
    }

    #[test]
    fn resume_within_the_ring_is_recovered() {
        let h = History::new(10, usize::MAX);
        fill(&h, "a", 15);
        let s = h.snapshot("a", Some(12), 4);
        assert_eq!((seqs(&s), s.recovered), (vec![13, 14, 15], Some(true)));
        let s = h.snapshot("a", Some(5), 4);
        assert_eq!((seqs(&s), s.recovered), (vec![6, 7, 8, 9, 10, 11, 12, 13, 14, 15], Some(true)), "exactly the ring");
        let s = h.snapshot("a", Some(15), 4);
        assert_eq!((seqs(&s), s.recovered), (vec![], Some(true)));
    }

    #[test]
    fn resume_beyond_the_ring_or_sequence_is_not_recovered() {
        let h = History::new(10, usize::MAX);
        fill(&h, "a", 15);
        let s = h.snapshot("a", Some(4), 4);
        assert_eq!((seqs(&s).len(), s.recovered), (10, Some(false)), "what is stored, flagged as incomplete");
        let s = h.snapshot("a", Some(99), 4);
        assert_eq!((s.last_seq, s.recovered), (15, Some(false)), "since beyond last_seq: sequence restarted");
        assert_eq!(h.snapshot("new", Some(0), 4).recovered, Some(true));
        assert_eq!(h.snapshot("new", Some(3), 4).recovered, Some(false));
    }

    #[test]
    fn memory_bound_evicts_least_recently_appended_rooms_but_keeps_their_seq() {
        let one = Entry::new(1, r#"{"seq":1}"#).frame.len();
        let h = History::new(100, one * 15);
        fill(&h, "old", 10);
        fill(&h, "new", 10);
        let (_, bytes) = h.usage();
        assert!(bytes <= one * 15, "{bytes}");
        assert_eq!(h.recent("old", 100).len(), 0, "old room evicted");
        assert_eq!(h.recent("new", 100).len(), 10);
        assert_eq!(h.last_seq("old"), 10, "sequence survives eviction");
        assert_eq!(h.snapshot("old", Some(5), 10).recovered, Some(false));
        fill(&h, "old", 1);
        assert_eq!(h.last_seq("old"), 11);
    }
}
