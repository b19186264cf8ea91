//! The worker's inbox: what other threads send it, handled once per loop
//! turn after the events (bounded by `INBOX_BUDGET`).
//!
//! Data flow: the sequencer (`hub`) sends each room's messages as
//! `ToWorker::Broadcast`, in seq order; [`Worker::broadcast`] queues the
//! shared frame to every local member of the room (the compressed one to
//! those that negotiated permessage-deflate) and completes the resumes that
//! were waiting for that seq. `Reject` answers a publish the sequencer
//! refused, `Loaded` completes a deferred join or `/history`, `Resync` and
//! an inbox overflow close chat clients with 1012 (they resume with
//! `since`), `Drain` starts the drain plan.
//!
//! Invariants: a member is sent a broadcast only if its seq is above the
//! member's `delivered` (what its welcome or earlier broadcasts carried),
//! so nothing arrives twice; slow consumers found during a fan-out are
//! closed only after it (`close_slow_consumers`), never while the room's
//! member list is iterated.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::{check_bound, enlist, Worker};
use crate::chat::history::Entry;
use crate::chat::session;
use crate::hub::inbox::ToWorker;
use crate::metrics::CloseReason;
use crate::net::conn::{flag, Phase};
use crate::net::outq::Chunk;
use crate::ws::deflate::SMALL_WINDOW_MAX_LEN;

/// Inbox messages handled per iteration.
const INBOX_BUDGET: usize = 8192;

impl Worker {
    /// Handles up to `INBOX_BUDGET` messages, then closes the slow
    /// consumers found meanwhile; with more left, the next poll does not sleep.
    pub(super) fn drain_inbox(&mut self) {
        self.inbox_more = false;
        for _ in 0..INBOX_BUDGET {
            let Some(msg) = self.inbox.try_recv() else {
                if self.inbox.take_overflow() {
                    self.resync_all();
                }
                self.close_slow_consumers();
                return;
            };
            match msg {
                ToWorker::Broadcast { room, entry, deflated } => self.broadcast(&room, &entry, deflated.as_ref()),
                ToWorker::Reject { key, conn_id, reject } => {
                    if self.conns.get(key).is_some_and(|c| c.id == conn_id) {
                        self.reject(key, reject);
                    }
                }
                ToWorker::Resync { room } => {
                    for key in self.rooms.members(&room).to_vec() {
                        self.start_close(key, 1012, "resync: reconnect with since", CloseReason::Resync, false);
                    }
                }
                ToWorker::Loaded { key, conn_id, older } => match self.conns.get(key) {
                    Some(c) if c.id == conn_id && matches!(c.phase, Phase::HistoryLoad { .. }) => {
                        self.answer_history(key, &older);
                    }
                    Some(c) if c.id == conn_id => self.complete_join(key, &older),
                    _ => {}
                },
                ToWorker::Drain => self.begin_drain(),
            }
        }
        self.inbox_more = true;
        self.close_slow_consumers();
    }

    /// The inbox overflowed: broadcasts were dropped. Every chat client of
    /// this worker is closed with 1012 and resumes with `since`, from the
    /// ring or MongoDB (see hub::inbox).
    fn resync_all(&mut self) {
        let members: Vec<usize> =
            self.conns.iter_mut().filter_map(|(k, c)| c.chat().is_some_and(|s| s.joined).then_some(k)).collect();
        log::warn!(
            "worker {}: broadcasts were dropped at its inbox's bound; closing its {} chat clients with 1012 to resume",
            self.index,
            members.len()
        );
        for key in members {
            self.start_close(key, 1012, "overloaded: reconnect with since", CloseReason::Resync, false);
        }
    }

    /// Queues `entry` to every local member of `room` that has not had it:
    /// its compressed frame `deflated` to members that negotiated
    /// permessage-deflate (and whose window it fits), its plain frame to others.
    fn broadcast(&mut self, room: &str, entry: &Entry, deflated: Option<&Arc<[u8]>>) {
        let max = self.state.config.max_outbound_bytes;
        let m = &self.state.metrics.workers[self.index];
        let members = self.rooms.members(room);
        let fits_small_window = entry.json().len() <= SMALL_WINDOW_MAX_LEN;
        let mut delivered = 0u64;
        let mut compressed = 0u64;
        let mut bytes = 0i64;
        for &key in members {
            let Some(c) = self.conns.get_mut(key) else { continue };
            if c.close_sent() || c.has(flag::SLOW | flag::DOOMED) {
                continue;
            }
            let Some(chat) = c.chat() else { continue };
            if entry.seq <= chat.delivered {
                continue; // already in this client's join snapshot
            }
            chat.delivered = entry.seq;
            let frame = match deflated {
                Some(z) if c.has(flag::DEFLATE) && (fits_small_window || !c.has(flag::DEFLATE_SMALL_WINDOW)) => {
                    compressed += 1;
                    z
                }
                _ => &entry.frame,
            };
            c.out.push(Chunk::Shared(frame.clone()));
            delivered += 1;
            bytes += frame.len() as i64;
            check_bound(c, key, max, &mut self.slow);
            enlist(c, key, flag::IN_PENDING, &mut self.pending_write);
        }
        m.messages_out.fetch_add(delivered, Relaxed);
        m.frames_out.fetch_add(delivered, Relaxed);
        m.compressed_frames_out.fetch_add(compressed, Relaxed);
        m.outbound_bytes.fetch_add(bytes, Relaxed);
        if !self.catching_up.is_empty() {
            self.resume_caught_up(Some((room, entry.seq)));
        }
    }

    /// Completes the waiting resumes that this pod has caught up with
    /// (`room` reached their `since`), or, with `None`, those past their
    /// deadline.
    pub(super) fn resume_caught_up(&mut self, reached: Option<(&str, u64)>) {
        let now = self.now;
        let mut ready = Vec::new();
        let conns = &self.conns;
        self.catching_up.retain(|(key, conn_id, deadline)| {
            let Some((room, since)) = conns.get(*key).filter(|c| c.id == *conn_id).and_then(|c| c.waiting_resume())
            else {
                return false; // gone, or closed meanwhile
            };
            let done = session::caught_up(room, since, reached, now, *deadline);
            if done {
                ready.push(*key);
            }
            !done
        });
        for key in ready {
            self.finish_join(key, &[], true);
        }
    }
}
