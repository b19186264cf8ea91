//! The worker's side of the chat: it carries out what `chat::session`
//! decides for a connection.
//!
//! Data flow: an upgrade starts [`Worker::join`]; the session says whether
//! the history loader must fetch the room first (`Action::Load`, completed
//! by `ToWorker::Loaded` through [`Worker::complete_join`]), whether a
//! resume must wait for this pod to catch up (`Action::CatchUp`: the entry
//! on `catching_up`, completed by `inbox` or the tick), or gives the
//! welcome (`Action::Welcome`: queued, and the connection enters the room
//! index). Each chat text frame goes to [`Worker::on_chat`], whose actions
//! are an error frame, a 1008 close, or the message handed to the
//! sequencer ([`Worker::apply`]).
//!
//! Invariants: the welcome is queued and the room joined in one step, with
//! no inbox message handled in between, so every broadcast is either in
//! the welcome's snapshot (skipped by `delivered`) or sent after it. A
//! connection that queued its close frame is never joined or sent a reply.

use std::sync::atomic::Ordering::Relaxed;

use super::{reply_frame, reply_frame_into, Worker};
use crate::channels::{LoadRequest, Reply};
use crate::chat::history::Entry;
use crate::chat::protocol::Reject;
use crate::chat::session::{self, Action, JoinContext, MessageLimits};
use crate::clock;
use crate::hub::{HubCommand, Origin};
use crate::ws::{Data, OpCode};

impl Worker {
    /// Joins the connection to its room — at once when this pod's history
    /// has what the client needs, otherwise after the history loader has
    /// fetched it (a cold room, or a resume from before the ring).
    pub(super) fn join(&mut self, key: usize) {
        let state = self.state.clone();
        let Some(chat) = self.conns.get_mut(key).and_then(|c| c.chat()) else { return };
        // Replica mode: the pod listens to the room from now on (before the
        // load is asked for, see replica::subscriber).
        state.room_interest(&chat.room, true);
        match chat.begin_join(&state.history, state.loader.is_some()) {
            Some(load) => self.apply(key, load),
            None => self.complete_join(key, &[]),
        }
    }

    /// Completes a join with the history held here plus `older` (from the
    /// loader): see [`ChatSession::complete_join`](crate::chat::session::ChatSession::complete_join).
    pub(super) fn complete_join(&mut self, key: usize, older: &[Entry]) {
        self.finish_join(key, older, false);
    }

    /// [`complete_join`](Self::complete_join), `waited` telling whether a
    /// resume already waited for this pod to catch up.
    pub(super) fn finish_join(&mut self, key: usize, older: &[Entry], waited: bool) {
        let state = self.state.clone();
        let now = self.now;
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.close_sent() {
            return;
        }
        let conn_id = c.id;
        let Some(chat) = c.chat() else { return };
        let ctx = JoinContext {
            pod_name: &state.config.pod_name,
            conn_id,
            history_on_join: state.config.history_on_join,
            now,
        };
        if let Some(action) = chat.complete_join(&state.history, older, waited, ctx) {
            self.apply(key, action);
        }
    }

    /// Takes the connection out of its room's index (it receives no more broadcasts).
    pub(super) fn leave_room(&mut self, key: usize) {
        let Some(chat) = self.conns.get_mut(key).and_then(|c| c.chat()) else { return };
        if !chat.joined {
            return;
        }
        chat.joined = false;
        let (room, slot) = (chat.room.clone(), chat.slot);
        if let Some(moved) = self.rooms.leave(&room, slot) {
            if let Some(other) = self.conns.get_mut(moved).and_then(|c| c.chat()) {
                other.slot = slot;
            }
        }
    }

    /// A chat text frame.
    pub(super) fn on_chat(&mut self, key: usize, text: &str) {
        let config = &self.state.config;
        let limits =
            MessageLimits { rate: config.rate_limit, burst: config.rate_burst, max_chat_bytes: config.max_chat_bytes };
        let origin = Origin { worker: self.index, key, conn_id: 0 };
        let now_ms = self.now_ms;
        // With a token, a frame's `username` is ignored: the name is the
        // token's, and so is the user id (the name itself unless recorded apart).
        let authenticated = config.auth.is_some();
        let recorded = self.user_ids.get(&key);
        let Some(c) = self.conns.get_mut(key) else { return };
        let origin = Origin { conn_id: c.id, ..origin };
        let Some(chat) = c.chat() else { return };
        let user_id: Option<Box<str>> = authenticated.then(|| recorded.map_or_else(|| chat.name.clone(), Box::clone));
        let actions = chat.on_text(text, &limits, now_ms, clock::unix_millis(), user_id.as_deref(), origin);
        for action in actions {
            self.apply(key, action);
        }
    }

    /// Carries out one action of the connection's chat session.
    pub(super) fn apply(&mut self, key: usize, action: Action) {
        match action {
            Action::Reject(reject) => self.reject(key, reject),
            Action::Publish(publish) => match self.state.publish.try_send(HubCommand::Publish(publish)) {
                Ok(()) => {
                    self.metrics().messages_in.fetch_add(1, Relaxed);
                }
                Err(_) => self.reject(key, session::overloaded()),
            },
            Action::Close { code, text, reason } => self.start_close(key, code, text, reason, false),
            Action::Load { since } => {
                let Some(c) = self.conns.get_mut(key) else { return };
                let conn_id = c.id;
                let Some(chat) = c.chat() else { return };
                let room = chat.room.clone();
                let reply = Some(Reply { worker: self.index, key, conn_id });
                let sent = self.state.loader.as_ref().is_some_and(|loader| {
                    loader.try_send(LoadRequest { room: room.clone(), since, last: None, reply }).is_ok()
                });
                if !sent {
                    // ToWorker::Loaded completes a sent one.
                    log::warn!("history loader saturated; joining room {room} with the history held here");
                    self.complete_join(key, &[]);
                }
            }
            Action::CatchUp { deadline } => {
                if let Some(c) = self.conns.get(key) {
                    self.catching_up.push((key, c.id, deadline));
                }
            }
            Action::Welcome(welcome) => {
                let Some(c) = self.conns.get_mut(key) else { return };
                let flags = c.flags;
                let Some(chat) = c.chat() else { return };
                chat.slot = self.rooms.join(&chat.room, key);
                // Written at once (with the 101 during the upgrade) from the
                // worker's reply buffer; what waits is allowed above the
                // bound, as the client's own reply.
                let min_bytes = self.state.config.compression_min_bytes;
                let compressed = self.reply(key, |out| {
                    reply_frame_into(flags, min_bytes, OpCode::Data(Data::Text), welcome.as_bytes(), out)
                });
                self.count_frame(compressed);
            }
        }
    }

    /// Answers a client frame with an error frame (if the connection may still send).
    pub(super) fn reject(&mut self, key: usize, reject: Reject) {
        self.metrics().reject(reject.code);
        let Some(c) = self.conns.get_mut(key) else { return };
        if !c.close_sent() {
            let frame = reply_frame(c.flags, &self.state, OpCode::Data(Data::Text), reject.to_json().as_bytes());
            self.queue_frame(key, frame.into());
        }
    }
}
