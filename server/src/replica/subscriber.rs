//! The subscriber thread: the Redis subscription → history → workers.
//!
//! Every message of every room arrives here on every pod (the origin pod
//! too: it delivers from the subscription like the others, so every pod
//! delivers in the one order Redis gave). For each message:
//! - a seq at or below the room's last one here is a duplicate (already
//!   delivered by a gap fill) and is skipped;
//! - the next seq is stored in history, framed once and fanned out;
//! - a seq further ahead means messages were missed (the subscription was
//!   down): they are fetched from the room's Redis list and delivered
//!   first, in order. If the list no longer has them, the room's clients
//!   here are closed with 1012 and resume with `since` (the history loader
//!   then reads MongoDB): a client is never left with a silent gap.
//!
//! After every (re)subscription, rooms whose Redis counter moved on while
//! this pod was not listening are caught up the same way, so a room that
//! goes quiet right after an outage is not left behind either.
//!
//! The subscription polls with a short timeout so the thread notices
//! shutdown; Redis commands for fills go over a second connection (a
//! subscribed connection accepts no other commands).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::{decode, history_key, seq_key, CHANNEL};
use crate::backoff::Backoff;
use crate::chat::history::{Arrival, Entry};
use crate::chat::protocol::ChatMessage;
use crate::hub::fan_out;
use crate::hub::inbox::ToWorker;
use crate::state::ServerState;
use crate::store::mongo::one_line;

/// How often the subscription wakes up to check for shutdown.
const POLL: Duration = Duration::from_millis(200);
/// Rooms whose counters are read in one MGET during a catch-up.
const CATCH_UP_CHUNK: usize = 500;

/// Starts the subscriber; it exits when `stop` is set.
pub fn spawn(state: Arc<ServerState>, client: redis::Client, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
    let mut sub = Subscriber {
        state,
        client,
        stop,
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        ever_connected: false,
    };
    std::thread::Builder::new().name("redis-subscriber".into()).spawn(move || sub.run())
}

struct Subscriber {
    state: Arc<ServerState>,
    client: redis::Client,
    stop: Arc<AtomicBool>,
    backoff: Backoff,
    ever_connected: bool,
}

impl Subscriber {
    fn run(&mut self) {
        while !self.stop.load(Ordering::Acquire) {
            if !self.backoff.ready() {
                std::thread::sleep(self.backoff.remaining().min(POLL));
                continue;
            }
            match self.session() {
                Ok(()) => break, // stopped
                Err(e) => {
                    let m = &self.state.metrics.backend;
                    m.redis_errors.fetch_add(1, Relaxed);
                    m.redis_subscriber_up.store(0, Relaxed);
                    let first = !self.backoff.failing();
                    let wait = self.backoff.failed();
                    if first {
                        log::warn!(
                            "Redis subscription lost ({}); resubscribing with backoff (next in {wait:?})",
                            one_line(&e)
                        );
                    }
                }
            }
        }
        log::debug!("redis-subscriber stopped");
    }

    /// One subscribed session: returns `Ok` on shutdown, `Err` when Redis fails.
    fn session(&mut self) -> redis::RedisResult<()> {
        let mut sub_con = self.client.get_connection_with_timeout(Duration::from_secs(2))?;
        let mut cmd = self.client.get_connection_with_timeout(Duration::from_secs(2))?;
        cmd.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut pubsub = sub_con.as_pubsub();
        pubsub.subscribe(CHANNEL)?;
        pubsub.set_read_timeout(Some(POLL))?;
        let m = &self.state.metrics.backend;
        m.redis_subscriber_up.store(1, Relaxed);
        if self.ever_connected {
            m.redis_reconnects.fetch_add(1, Relaxed);
            log::info!("Redis subscription restored on {CHANNEL}; catching up rooms");
        } else {
            log::info!("Redis subscription on {CHANNEL} established");
        }
        self.ever_connected = true;
        self.backoff.succeeded();
        // Messages published from here on are buffered on the subscription;
        // anything missed before it is found by comparing counters.
        self.catch_up(&mut cmd)?;
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            match pubsub.get_message() {
                Ok(msg) => {
                    let payload = msg.get_payload_bytes().to_vec();
                    self.on_payload(&payload, &mut cmd)?;
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e),
            }
        }
    }

    fn on_payload(&self, payload: &[u8], cmd: &mut redis::Connection) -> redis::RedisResult<()> {
        let m = &self.state.metrics.backend;
        m.redis_received.fetch_add(1, Relaxed);
        let Some(msg) = decode(payload) else {
            log::warn!("ignored a message on {CHANNEL} that is not ours ({} bytes)", payload.len());
            return Ok(());
        };
        let room: Arc<str> = Arc::from(msg.room.as_str());
        match self.state.history.classify(&room, msg.seq) {
            Arrival::Duplicate => Ok(()),
            Arrival::Next => {
                self.deliver(&room, &msg);
                Ok(())
            }
            Arrival::Gap { after } => {
                self.fill(cmd, &room, after, msg.seq)?;
                self.deliver(&room, &msg);
                Ok(())
            }
        }
    }

    /// Delivers the messages `after < seq < upto` of `room` from its Redis
    /// list, or makes the room's clients resume if the list lacks them.
    fn fill(&self, cmd: &mut redis::Connection, room: &Arc<str>, after: u64, upto: u64) -> redis::RedisResult<()> {
        let ring = self.state.history.ring() as i64;
        let raw: Vec<Vec<u8>> = redis::cmd("LRANGE").arg(history_key(room)).arg(-ring).arg(-1).query(cmd)?;
        let mut missing: Vec<ChatMessage> = raw
            .iter()
            .filter_map(|r| decode(r))
            .filter(|m| m.room.as_str() == &**room && m.seq > after && m.seq < upto)
            .collect();
        missing.sort_by_key(|m| m.seq);
        missing.dedup_by_key(|m| m.seq);
        let wanted = (upto - after - 1) as usize;
        let m = &self.state.metrics.backend;
        if missing.len() == wanted {
            for msg in &missing {
                self.deliver(room, msg);
            }
            m.gap_filled.fetch_add(wanted as u64, Relaxed);
            log::info!("room {room}: filled a gap of {wanted} messages (seq {}..{}) from Redis", after + 1, upto - 1);
        } else {
            m.gap_resyncs.fetch_add(1, Relaxed);
            log::warn!(
                "room {room}: seq {}..{} are no longer in Redis; clients here resume from MongoDB or history",
                after + 1,
                upto - 1
            );
            self.state.history.restart_after_gap(room, upto);
            for inbox in &self.state.inboxes {
                inbox.send(ToWorker::Resync { room: room.clone() });
            }
        }
        Ok(())
    }

    /// Compares every known room's last seq with its Redis counter and
    /// fills what moved on while this pod was not subscribed.
    fn catch_up(&self, cmd: &mut redis::Connection) -> redis::RedisResult<()> {
        let rooms = self.state.history.known_rooms();
        for chunk in rooms.chunks(CATCH_UP_CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|(r, _)| seq_key(r)).collect();
            let remote: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query(cmd)?;
            for ((room, local), remote) in chunk.iter().zip(remote) {
                if let Some(r) = remote.filter(|&r| r > *local) {
                    // Re-read: a live message may have advanced the room meanwhile.
                    if let Some(now) = self.state.history.known_last_seq(room).filter(|&n| n < r) {
                        self.fill(cmd, room, now, r + 1)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn deliver(&self, room: &Arc<str>, msg: &ChatMessage) {
        let entry = Entry::new(msg.seq, &msg.to_json());
        self.state.history.append(room, entry.clone());
        fan_out(&self.state, room, &entry);
        self.state.metrics.backend.fanned_out.fetch_add(1, Relaxed);
    }
}
