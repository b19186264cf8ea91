//! The worker's HTTP side: one request of a connection in its HTTP phase.
//!
//! Data flow: `input` parses a request head → [`Worker::on_request`]
//! applies the per-address upgrade limit, routes it (`http::routes`,
//! restricted to the operator endpoints on the admin listener) and then
//! either queues the response ([`Worker::respond`]), upgrades the
//! connection to WebSocket ([`Worker::upgrade`], which for the chat makes
//! its `ChatSession` and starts the join), or hands a `/history` that needs
//! the store to the history loader (phase `HistoryLoad`) and answers when
//! the loader replies ([`Worker::answer_history`]).
//!
//! Invariants: a response that does not keep the connection alive is its
//! last (the connection ends after the flush, input ignored); an upgrade
//! holds a WebSocket slot (MAX_CONNECTIONS) and, with a per-address limit,
//! the address's slot in `peer_slots`, both released in `remove`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use super::{Worker, NO_EXPIRY};
use crate::channels::{LoadRequest, Reply};
use crate::chat::history::Entry;
use crate::chat::session::ChatSession;
use crate::clock;
use crate::http::extensions::Offers;
use crate::http::response::Response;
use crate::http::routes::{self, Listener, Route, UpgradeKind};
use crate::http::upgrade;
use crate::net::conn::{flag, Phase, Service, CLOSE_TIMEOUT_SECS};

impl Worker {
    /// One complete HTTP request head.
    pub(super) fn on_request(&mut self, key: usize, head: &crate::http::request::Head<'_>) {
        if log::log_enabled!(log::Level::Trace) {
            let id = self.conns.get(key).map_or(0, |c| c.id);
            let query = crate::auth::redact(head.query);
            let sep = if query.is_empty() { "" } else { "?" };
            log::trace!("connection {id}: {} {}{sep}{query}", head.method, head.path);
        }
        if head.upgrade_websocket && self.state.peers.rate_limited() {
            if let Err(refused) = self.peer(key).map_or(Ok(()), |ip| self.state.peers.take_upgrade(ip, Instant::now()))
            {
                self.metrics().address_refusal(refused.limit);
                return self.respond(key, refused.response(), false, false);
            }
        }
        let from = match self.conns.get(key).is_some_and(|c| c.has(flag::ADMIN)) {
            true => Listener::Admin,
            false => Listener::Public,
        };
        match routes::route_on(from, head, &self.state) {
            Route::Denied(denial) => {
                self.metrics().auth_refusal(denial.reason);
                log::debug!(
                    "connection {}: refused ({})",
                    self.conns.get(key).map_or(0, |c| c.id),
                    denial.reason.label()
                );
                self.respond(key, denial.response(), false, head.method == "HEAD");
            }
            Route::Respond(resp) => {
                let keep_alive = head.keep_alive() && self.drain.is_none();
                self.respond(key, resp, keep_alive, head.method == "HEAD");
            }
            Route::Upgrade { accept, kind } => self.upgrade(key, &accept, kind, head.extensions),
            Route::LoadHistory { room, limit } => {
                let head_only = head.method == "HEAD";
                let room: Arc<str> = Arc::from(room);
                let reply = Some(Reply { worker: self.index, key, conn_id: self.conns.get(key).map_or(0, |c| c.id) });
                let sent = self.state.loader.as_ref().is_some_and(|l| {
                    l.try_send(LoadRequest { room: room.clone(), since: None, last: Some(limit), reply }).is_ok()
                });
                if !sent {
                    // The loader is saturated: what this pod holds.
                    let ring = self.state.history.recent(&room, limit);
                    return self.respond(key, routes::history_response(&ring, &[], limit), false, head_only);
                }
                if let Some(c) = self.conns.get_mut(key) {
                    c.phase = Phase::HistoryLoad { room, limit, head_only };
                }
            }
        }
    }

    /// The history loader answered a deferred `/history`.
    pub(super) fn answer_history(&mut self, key: usize, older: &[Entry]) {
        let Some(c) = self.conns.get_mut(key) else { return };
        let Phase::HistoryLoad { room, limit, head_only } = std::mem::replace(&mut c.phase, Phase::Http) else {
            return;
        };
        let ring = self.state.history.recent(&room, limit);
        self.respond(key, routes::history_response(&ring, older, limit), false, head_only);
    }

    /// Queues an HTTP response; errors and non-keep-alive requests close after it.
    ///
    /// A response is the connection's own reply, not a broadcast pushed at
    /// it, so it never makes the connection a slow consumer: it is queued
    /// as an allowance above `MAX_OUTBOUND_BYTES`. What bounds HTTP output
    /// instead is keep-alive: a response that leaves more than the bound
    /// queued (a large `/history`, or pipelined requests whose answers are
    /// not being read) is the connection's last, so it holds at most the
    /// bound plus one response.
    pub(super) fn respond(&mut self, key: usize, resp: Response, keep_alive: bool, head_only: bool) {
        let status = resp.status();
        let max = self.state.config.max_outbound_bytes;
        let queued = self.conns.get(key).map_or(0, |c| c.out.bytes());
        let keep = keep_alive && status < 400 && queued + resp.body_len() <= max;
        self.metrics().http_response(status);
        let bytes = resp.into_bytes(keep, head_only);
        if let Some(c) = self.conns.get_mut(key) {
            c.allowance = c.allowance.saturating_add(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        }
        self.queue(key, bytes.into());
        let handshake = self.state.config.handshake_timeout.as_secs() as u32;
        let now = self.now;
        if let Some(c) = self.conns.get_mut(key) {
            if keep {
                c.deadline = now + handshake;
            } else {
                c.closing = c.closing.end_after_flush(false, true);
                c.deadline = now + CLOSE_TIMEOUT_SECS;
            }
        }
    }

    /// The WebSocket handshake succeeded: take the slots, send 101, become
    /// `Phase::Ws` and, for the chat, start the join.
    fn upgrade(&mut self, key: usize, accept: &str, kind: UpgradeKind, offers: Offers) {
        let counted_peer = match self.state.peers.counts_connections().then(|| self.peer(key)).flatten() {
            Some(ip) => match self.state.peers.open(ip) {
                Ok(()) => Some(ip),
                Err(refused) => {
                    self.metrics().address_refusal(refused.limit);
                    return self.respond(key, refused.response(), false, false);
                }
            },
            None => None,
        };
        if self.drain.is_some() || !self.state.try_reserve_ws() {
            if let Some(ip) = counted_peer {
                self.state.peers.release(ip);
            }
            self.respond(key, routes::at_capacity(), false, false);
            return;
        }
        if let Some(ip) = counted_peer {
            self.peer_slots.insert(key, ip);
        }
        let m = &self.state.metrics.workers[self.index];
        m.http_connections.fetch_sub(1, Relaxed);
        m.ws_connections.fetch_add(1, Relaxed);
        m.upgrades.fetch_add(1, Relaxed);
        m.http_response(101);
        let deflate = if self.state.config.compression {
            m.deflate_declined.fetch_add(u64::from(offers.declined), Relaxed);
            offers.deflate
        } else {
            None
        };
        let m = &self.state.metrics.workers[self.index];
        let Some(c) = self.conns.get_mut(key) else { return };
        c.deadline = NO_EXPIRY; // an open WebSocket's deadline is its token's expiry
        if let Some(agreement) = deflate {
            c.flags |= flag::DEFLATE;
            if agreement.small_window() {
                c.flags |= flag::DEFLATE_SMALL_WINDOW;
            }
            m.deflate_connections.fetch_add(1, Relaxed);
        }
        let service = match kind {
            UpgradeKind::Echo => Service::Echo,
            UpgradeKind::Chat(params, identity) => {
                let name = match identity {
                    // The token names the user; the `name` parameter is ignored.
                    Some(id) => {
                        c.deadline = expiry_tick(self.state.started, id.expires);
                        if id.user_id != id.name {
                            self.user_ids.insert(key, id.user_id.into_boxed_str());
                        }
                        id.name
                    }
                    None => params.name,
                };
                Service::Chat(Box::new(ChatSession::new(
                    self.rooms.intern(&params.room),
                    params.since,
                    name.into_boxed_str(),
                    self.state.config.rate_burst,
                    self.now_ms,
                )))
            }
        };
        let is_chat = matches!(service, Service::Chat(_));
        c.phase = Phase::Ws { decoder: crate::ws::Decoder::new(), service };
        log::debug!("connection {} upgraded", c.id);
        // The 101 and, when the join completes at once, the welcome are
        // gathered in the worker's reply buffer and written together at the
        // end, in one send when the socket takes them (it nearly always does).
        self.reply.clear();
        upgrade::switching_protocols(accept, deflate, &mut self.reply);
        self.gathering = Some(key);
        if is_chat {
            self.join(key);
        }
        self.gathering = None;
        self.write_reply(key);
    }
}

/// The worker clock second at which a token with `exp` = `unix_secs`
/// expires, rounded up so the tick (whole seconds) never closes before it.
fn expiry_tick(started: Instant, unix_secs: u64) -> u32 {
    let elapsed_ms = started.elapsed().as_millis() as i64;
    let due_ms =
        elapsed_ms + i64::try_from(unix_secs).unwrap_or(i64::MAX / 2).saturating_mul(1000) - clock::unix_millis();
    u32::try_from((due_ms.max(0) + 999) / 1000).unwrap_or(u32::MAX)
}
