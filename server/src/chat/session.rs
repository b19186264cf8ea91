//! A chat session's decisions: joining a room (now, after the history
//! loader, or after this pod catches up with a resume), each message a
//! client sends (validation, rate limit, the message to publish), without
//! sockets.
//!
//! Data flow: the worker hands a [`ChatSession`] (the chat state of one
//! connection) and the inputs a decision needs (the text, the clock, the
//! history, the limits) to a method here; the method updates the session
//! and returns [`Action`]s. The worker carries them out in order: it queues
//! frames, closes, sends to the sequencer or the history loader, and keeps
//! the room index (`chat::rooms`). Nothing here does I/O, so every rule is
//! checked by the unit tests at the bottom on the returned actions.
//!
//! Invariants:
//! - A session becomes `joined` only by [`ChatSession::complete_join`]
//!   returning [`Action::Welcome`], which also sets `delivered` to the
//!   snapshot's last seq: broadcasts at or below it are in the welcome and
//!   are skipped, newer ones are sent (the worker makes the join atomic with
//!   respect to its inbox by carrying the action out at once).
//! - `strikes` counts rate-limited messages in a row; an accepted message
//!   resets it; [`MAX_STRIKES`] in a row close the connection (1008).

use std::sync::Arc;

use super::history::{Backing, Entry, History};
use super::protocol::{self, Reject, Welcome};
use super::ratelimit::TokenBucket;
use crate::hub::{Origin, Publish};
use crate::metrics::CloseReason;

/// Rate-limited messages in a row that close the connection (1008).
pub const MAX_STRIKES: u8 = 10;
/// Seconds a resume may wait for this pod to catch up with its `since`.
pub const CATCH_UP_SECS: u32 = 2;

/// A chat session's state.
#[derive(Debug)]
pub struct ChatSession {
    /// The room.
    pub room: Arc<str>,
    /// Position in the worker's RoomIndex, valid when `joined`.
    pub slot: u32,
    /// A member of the room's index (receives broadcasts).
    pub joined: bool,
    /// `since` requested at upgrade, used when the join completes.
    pub since: Option<u64>,
    /// Default user name.
    pub name: Box<str>,
    /// Highest seq queued to this client; broadcasts at or below it are skipped.
    pub delivered: u64,
    /// Chat message rate limit.
    pub bucket: TokenBucket,
    /// Rate-limited messages in a row.
    pub strikes: u8,
}

/// What the worker does for a session, in the order returned.
#[derive(Debug)]
pub enum Action {
    /// Send this error frame to the client (and count it).
    Reject(Reject),
    /// Hand this message to the sequencer; if it is full, reject it with [`overloaded`].
    Publish(Publish),
    /// Send a close frame and stop sending (input is discarded).
    Close {
        /// The close code.
        code: u16,
        /// The close reason's text.
        text: &'static str,
        /// What the close is counted as.
        reason: CloseReason,
    },
    /// Ask the history loader for the room's history (from `since`); the
    /// join completes when it answers. If the loader is saturated, join at
    /// once with what this pod holds.
    Load {
        /// The resume's `since`.
        since: Option<u64>,
    },
    /// A resume is ahead of this pod: wait until the room reaches its
    /// `since`, or until `deadline` (worker clock, s), then complete the join.
    CatchUp {
        /// When to give up waiting.
        deadline: u32,
    },
    /// Send this welcome frame and make the connection a room member.
    Welcome(String),
}

/// Up to two actions, in order, without allocating on the message path.
#[derive(Debug, Default)]
pub struct Actions([Option<Action>; 2]);

impl Actions {
    fn one(a: Action) -> Actions {
        Actions([Some(a), None])
    }

    fn two(a: Action, b: Action) -> Actions {
        Actions([Some(a), Some(b)])
    }
}

impl IntoIterator for Actions {
    type Item = Action;
    type IntoIter = std::iter::Flatten<std::array::IntoIter<Option<Action>, 2>>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter().flatten()
    }
}

/// The configured limits on what a client sends.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimits {
    /// Messages per second (`RATE_LIMIT`).
    pub rate: f64,
    /// Burst (`RATE_BURST`).
    pub burst: u32,
    /// Longest message text (`MAX_CHAT_BYTES`).
    pub max_chat_bytes: usize,
}

/// What a welcome needs besides the session and the history.
#[derive(Debug, Clone, Copy)]
pub struct JoinContext<'a> {
    /// This pod's name.
    pub pod_name: &'a str,
    /// The connection's id.
    pub conn_id: u64,
    /// Messages sent on a join without `since` (`HISTORY_ON_JOIN`).
    pub history_on_join: usize,
    /// Worker clock (s).
    pub now: u32,
}

/// The client's message was refused because the sequencer is full.
pub fn overloaded() -> Reject {
    Reject::new("unavailable", "the server is overloaded; message not sent")
}

/// A binary frame on a chat connection.
pub fn on_binary() -> Action {
    Action::Reject(Reject::new("unsupported", "chat frames are JSON text, not binary"))
}

/// Whether a resume waiting for `since` in `room` may complete: the room
/// `reached` a seq at or past it, or (with `None`) `deadline` has come.
pub fn caught_up(room: &str, since: u64, reached: Option<(&str, u64)>, now: u32, deadline: u32) -> bool {
    match reached {
        Some((r, seq)) => room == r && seq >= since,
        None => now >= deadline,
    }
}

impl ChatSession {
    /// A session for `room`, not yet joined; its bucket full.
    pub fn new(room: Arc<str>, since: Option<u64>, name: Box<str>, burst: u32, now_ms: u32) -> ChatSession {
        ChatSession {
            room,
            slot: 0,
            joined: false,
            since,
            name,
            delivered: 0,
            bucket: TokenBucket::new(burst, now_ms),
            strikes: 0,
        }
    }

    /// The first step of a join: `Some(Load)` when the history loader must
    /// fetch what the client needs first (a cold room, or a resume from
    /// before the ring), `None` when [`complete_join`](Self::complete_join)
    /// can run at once.
    pub fn begin_join(&self, history: &History, has_loader: bool) -> Option<Action> {
        (has_loader && history.needs_load(&self.room, self.since)).then_some(Action::Load { since: self.since })
    }

    /// Completes the join with the history held here plus `older` (loaded
    /// from the store): the welcome, or a wait when a resume is ahead of
    /// this pod (replica mode: the client saw seq S on another pod before
    /// this one's subscription delivered it; joined now, it would be told
    /// `recovered: false` and then get S again). After a wait (`waited`) the
    /// join completes whatever the room reached: a room still behind has
    /// really restarted its sequence. `None` if already joined.
    pub fn complete_join(
        &mut self,
        history: &History,
        older: &[Entry],
        waited: bool,
        ctx: JoinContext<'_>,
    ) -> Option<Action> {
        if self.joined {
            return None;
        }
        let behind = self.since.is_some_and(|s| s > history.last_seq(&self.room));
        if behind && !waited && history.backing() != Backing::Memory {
            // `older` (from MongoDB) is below the ring, so below `since`:
            // nothing of it is sent after the wait either.
            return Some(Action::CatchUp { deadline: ctx.now + CATCH_UP_SECS });
        }
        let snap = history.snapshot(&self.room, self.since, ctx.history_on_join, older);
        let welcome = Welcome {
            pod_name: ctx.pod_name,
            connection: ctx.conn_id,
            room: &self.room,
            last_seq: snap.last_seq,
            history: snap.entries.iter().map(Entry::json).collect(),
            recovered: snap.recovered,
        }
        .to_json();
        self.delivered = snap.last_seq;
        self.joined = true;
        Some(Action::Welcome(welcome))
    }

    /// A text frame from the client: the message to publish, or the
    /// error frame (and, after [`MAX_STRIKES`] rate-limited ones in a row,
    /// the close). `user_id` is the token's `sub` when the connection was
    /// authenticated: the name is then the session's, a frame's `username`
    /// is ignored.
    pub fn on_text(
        &mut self,
        text: &str,
        limits: &MessageLimits,
        now_ms: u32,
        unix_ms: i64,
        user_id: Option<&str>,
        origin: Origin,
    ) -> Actions {
        let incoming = match protocol::parse_chat(text, &self.name, limits.max_chat_bytes) {
            Ok(m) => m,
            Err(reject) => return Actions::one(Action::Reject(reject)),
        };
        if !self.bucket.try_take(now_ms, limits.rate, limits.burst) {
            self.strikes = self.strikes.saturating_add(1);
            let reject = Action::Reject(Reject::new(
                "rate_limited",
                format!("more than {} messages per second; message not sent", limits.rate),
            ));
            if self.strikes >= MAX_STRIKES {
                let close = Action::Close { code: 1008, text: "rate limit exceeded", reason: CloseReason::RateLimit };
                return Actions::two(reject, close);
            }
            return Actions::one(reject);
        }
        self.strikes = 0;
        let username = if user_id.is_some() { self.name.to_string() } else { incoming.username };
        Actions::one(Action::Publish(Publish {
            room: self.room.clone(),
            username,
            message: incoming.message,
            timestamp_ms: unix_ms,
            client_id: incoming.client_id,
            user_id: user_id.map(str::to_string),
            origin,
        }))
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
