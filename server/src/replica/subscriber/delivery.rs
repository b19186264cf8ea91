//! The subscriber's message path: a published payload (`SEQ JSON` lines of
//! one room) is checked against the room's history (next, duplicate, or a
//! gap filled from the room's Redis list first), appended, and fanned out
//! to the workers.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::super::{channel, decode, history_key};
use super::Subscriber;
use crate::chat::history::{Arrival, Entry};
use crate::chat::protocol::ChatMessage;
use crate::hub::fan_out;
use crate::hub::inbox::ToWorker;

impl Subscriber {
    /// A published payload: one or more `SEQ JSON` lines of one room.
    pub(super) fn on_payload(&mut self, room: &Arc<str>, payload: &[u8]) -> redis::RedisResult<()> {
        for line in payload.split(|&b| b == b'\n') {
            self.on_message(room, line)?;
        }
        Ok(())
    }

    pub(super) fn on_message(&mut self, room: &Arc<str>, payload: &[u8]) -> redis::RedisResult<()> {
        let m = &self.state.metrics.backend;
        m.redis_received.fetch_add(1, Relaxed);
        let Some(msg) = decode(payload).filter(|m| *m.room == **room) else {
            log::warn!("ignored a message on {} that is not ours ({} bytes)", channel(room), payload.len());
            return Ok(());
        };
        match self.state.history.classify(room, msg.seq) {
            Arrival::Duplicate => Ok(()),
            Arrival::Next => {
                self.deliver(room, &msg);
                Ok(())
            }
            Arrival::Gap { after } => {
                self.fill(room, after, msg.seq)?;
                // A load may have merged it meanwhile.
                if self.state.history.classify(room, msg.seq) == Arrival::Next {
                    self.deliver(room, &msg);
                }
                Ok(())
            }
        }
    }

    /// Delivers the messages `after < seq < upto` of `room` from its Redis
    /// list, or makes the room's clients resume if the list lacks them.
    pub(super) fn fill(&mut self, room: &Arc<str>, after: u64, upto: u64) -> redis::RedisResult<()> {
        let ring = self.state.history.ring() as i64;
        let raw: Vec<Vec<u8>> =
            self.pool.query(room, redis::cmd("LRANGE").arg(history_key(room)).arg(-ring).arg(-1))?;
        // Re-read: a live message may have advanced the room meanwhile.
        let after = self.state.history.known_last_seq(room).map_or(after, |n| n.max(after));
        if after + 1 >= upto {
            return Ok(());
        }
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
            for inbox in &self.state.workers.inboxes {
                inbox.send(ToWorker::Resync { room: room.clone() });
            }
        }
        Ok(())
    }

    pub(super) fn deliver(&self, room: &Arc<str>, msg: &ChatMessage) {
        let entry = Entry::new(msg.seq, &msg.to_json());
        self.state.history.append(room, entry.clone());
        fan_out(&self.state.workers, room, &entry);
        self.state.metrics.backend.fanned_out.fetch_add(1, Relaxed);
        // This pod's own message: stored now that it is delivered.
        self.state.echoes.delivered(msg);
    }
}
