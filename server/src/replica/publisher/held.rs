//! What the publisher holds while Redis cannot take it, bounded and in
//! `/metrics`: refused with `unavailable` after the hold; those whose
//! script call may have run (*in doubt*) are kept as unresolved and
//! looked up in their rooms' lists once Redis answers again.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::{find_in_list, history_key, DEDUPE_TTL_SECS};
use super::{Held, Publisher, HOLD, UNRESOLVED_MAX};
use crate::channels::{LoadRequest, Origin, SequencerHandles};
use crate::chat::protocol::Reject;
use crate::health::one_line;
use crate::hub::inbox::ToWorker;

impl Publisher {
    /// `held` lost `h` (published, refused): its bytes no longer count.
    pub(super) fn release(&mut self, h: &Held) {
        self.held_bytes -= h.bytes;
    }

    pub(super) fn report_held(&self) {
        let m = &self.state.metrics.backend;
        m.redis_held.store(self.held.len() as i64, Relaxed);
        m.redis_held_bytes.store(self.held_bytes as i64, Relaxed);
    }

    /// Refuses held messages that have waited longer than the hold; those in
    /// doubt are kept as unresolved.
    pub(super) fn refuse_expired(&mut self) {
        let mut refused = 0;
        let hold = if self.stopping { self.hold.min(HOLD) } else { self.hold };
        while self.held.front().is_some_and(|h| h.since.elapsed() >= hold) {
            let h = self.held.pop_front().expect("checked");
            self.release(&h);
            self.refuse(&h, "Redis is unreachable; message not sent, retry later");
            refused += 1;
            if h.in_doubt {
                if self.unresolved.len() >= UNRESOLVED_MAX {
                    self.unresolved.pop_front();
                }
                self.unresolved.push_back((h.msg, Instant::now()));
            }
        }
        if refused > 0 {
            log::warn!("Redis unreachable for {hold:?}: refused {refused} messages with `unavailable`");
        }
    }

    /// Looks the unresolved messages up in their rooms' lists (just after
    /// a reconnect): one found there was published after all, so it was
    /// delivered and is stored now. Those older than `DEDUPE_TTL_SECS` are
    /// dropped unread.
    pub(super) fn resolve_unresolved(&mut self) {
        let ttl = Duration::from_secs(DEDUPE_TTL_SECS);
        self.unresolved.retain(|(_, at)| at.elapsed() < ttl);
        if self.unresolved.is_empty() {
            return;
        }
        let ring = self.state.history.ring() as i64;
        let mut lists: HashMap<String, Vec<Vec<u8>>> = HashMap::new();
        for (msg, _) in &self.unresolved {
            if lists.contains_key(&msg.room) {
                continue;
            }
            let cmd = redis::cmd("LRANGE").arg(history_key(&msg.room)).arg(-ring).arg(-1).clone();
            match self.pool.query::<Vec<Vec<u8>>>(&msg.room, &cmd) {
                Ok(items) => {
                    lists.insert(msg.room.clone(), items);
                }
                Err(e) => {
                    log::debug!("reading the lists of unresolved messages failed ({}); next reconnect", one_line(&e));
                    return; // still unresolved; the next reconnect tries again
                }
            }
        }
        let mut published = 0;
        for (mut msg, _) in std::mem::take(&mut self.unresolved) {
            let Some(seq) = lists.get(&msg.room).and_then(|items| find_in_list(items, &msg.id)) else { continue };
            msg.seq = seq;
            published += 1;
            self.state.metrics.backend.redis_published.fetch_add(1, Relaxed);
            if let Some(store) = &self.state.store {
                store.enqueue(msg);
            }
        }
        if published > 0 {
            log::warn!(
                "{published} messages refused as `unavailable` during the Redis outage had been published before \
                 it; they were delivered and are now stored"
            );
        }
    }

    pub(super) fn refuse(&self, h: &Held, text: &str) {
        refuse(&self.state, &h.origin, text);
    }

    pub(super) fn request_load(&self, room: &str) {
        if let Some(loader) = &self.state.loader {
            let _ = loader.try_send(LoadRequest { room: Arc::from(room), since: None, last: None, reply: None });
        }
    }
}

/// Tells the sender of a message that it was not sent (`unavailable`).
pub(super) fn refuse(state: &SequencerHandles, origin: &Origin, text: &str) {
    if let Some(inbox) = state.workers.inboxes.get(origin.worker) {
        inbox.send(ToWorker::Reject {
            key: origin.key,
            conn_id: origin.conn_id,
            reject: Reject::new("unavailable", text),
        });
    }
}
