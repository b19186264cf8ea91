//! The worker's closing side: the WebSocket close handshake, slow
//! consumers, the drain, and the removal of a connection.
//!
//! Data flow: a close starts with [`Worker::start_close`] (ours: a protocol
//! error, a timeout, a slow consumer, the drain, an expired token, a rate
//! limit) or [`Worker::on_close_frame`] (the peer's); both queue the close
//! frame, move the connection to `Closing::Flushing` and take it out of its
//! room. Once both close frames are exchanged and ours is written, the
//! handshake is complete and the connection is doomed at once: the server
//! closes the TCP connection first (RFC 6455 §7.1.1), so neither side waits
//! on the other. Until the peer's close arrives, the flush before sleep
//! shuts our write side and lingers (`worker::flush`); the peer's close
//! frame, its FIN, the close deadline (tick) or an error dooms it
//! ([`Worker::doom`]), and the end of the loop turn removes it
//! ([`Worker::remove`]), releasing everything it held.
//!
//! The drain ([`Worker::begin_drain`]): the public listener is closed, idle
//! HTTP connections removed, and the WebSocket connections are sent the
//! drain notice and a 1001 close on the schedule of `net::drain`.
//!
//! Invariants: a close frame is queued at most once per connection
//! (`close_sent`), and nothing is queued after it but the drain notice
//! that precedes it; a connection is removed only at the end of a turn, so
//! no room iteration ever sees a freed key; every gauge and slot a
//! connection holds is released exactly once, in `remove`.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::{enlist, Worker};
use crate::chat::protocol::DRAIN_NOTICE;
use crate::metrics::CloseReason;
use crate::net::conn::{flag, Closing, CLOSE_TIMEOUT_SECS};
use crate::net::drain::{self, DrainPlan};
use crate::ws::{encoder, Control, Data, OpCode, WsError};

impl Worker {
    /// The peer's close frame: answered with ours unless ours went first;
    /// input is over either way.
    pub(super) fn on_close_frame(&mut self, key: usize, close: Option<(u16, &str)>) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(key) else { return };
        c.flags |= flag::CLOSE_RECEIVED;
        if c.close_sent() {
            // The answer to our close: the handshake is complete. Ours is
            // written already (lingering): close now; else the flush that
            // writes it ends the connection.
            c.closing = c.closing.discard_input();
            if matches!(c.closing, Closing::Lingering { .. }) {
                self.doom(key);
            }
            return;
        }
        // "If an endpoint receives a Close frame and did not previously send a
        //  Close frame, the endpoint MUST send a Close frame in response. (When
        //  sending a Close frame in response, the endpoint typically echos the
        //  status code it received.)" (§5.5.1)
        let payload = close.map_or_else(Vec::new, |(code, _)| encoder::close_payload(code, ""));
        c.set_reason(CloseReason::Client);
        c.closing = c.closing.end_after_flush(true, true);
        c.deadline = now + CLOSE_TIMEOUT_SECS;
        self.queue_frame(key, encoder::frame(OpCode::Control(Control::Close), &payload).into());
        self.leave_room(key);
    }

    /// A frame broke RFC 6455 (or a limit): close with its code, input discarded.
    pub(super) fn on_protocol_error(&mut self, key: usize, e: WsError) {
        let reason = match e.close_code() {
            1007 => CloseReason::InvalidUtf8,
            1009 => CloseReason::TooBig,
            _ => CloseReason::Protocol,
        };
        if let Some(c) = self.conns.get(key) {
            log::debug!("connection {}: {e}; closing with {}", c.id, e.close_code());
        }
        self.start_close(key, e.close_code(), &e.to_string(), reason, false);
    }

    /// Sends a close frame and stops sending; with `keep_reading`, chat
    /// messages still in flight from the client are read and published.
    pub(super) fn start_close(&mut self, key: usize, code: u16, text: &str, reason: CloseReason, keep_reading: bool) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.close_sent() {
            return;
        }
        if reason == CloseReason::SlowConsumer {
            let dropped = c.out.discard_unstarted();
            self.state.metrics.workers[self.index].outbound_bytes.fetch_sub(dropped as i64, Relaxed);
        }
        c.set_reason(reason);
        c.closing = c.closing.end_after_flush(true, !keep_reading);
        c.deadline = now + CLOSE_TIMEOUT_SECS;
        self.queue_frame(key, encoder::close_frame(code, text).into());
        self.leave_room(key);
    }

    /// Marks the connection for removal at the end of the loop turn.
    pub(super) fn doom(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            enlist(c, key, flag::DOOMED, &mut self.doomed);
        }
    }

    /// Removes a connection: out of its room, out of the gauges, socket closed.
    pub(super) fn remove(&mut self, key: usize) {
        self.leave_room(key);
        let Some(mut c) = self.conns.try_remove(key) else { return };
        if let Some(chat) = c.chat() {
            self.state.room_interest(&chat.room, false);
        }
        if let Some(ip) = self.peer_slots.remove(&key) {
            self.state.peers.release(ip);
        }
        if !self.user_ids.is_empty() {
            self.user_ids.remove(&key);
        }
        let m = &self.state.metrics.workers[self.index];
        if c.is_ws() {
            m.ws_connections.fetch_sub(1, Relaxed);
            self.state.release_ws();
        } else {
            m.http_connections.fetch_sub(1, Relaxed);
        }
        if c.has(flag::DEFLATE) {
            m.deflate_connections.fetch_sub(1, Relaxed);
        }
        if let Some(reason) = c.close_reason {
            m.close(reason);
        }
        m.outbound_bytes.fetch_sub(c.out.bytes() as i64, Relaxed);
        log::trace!("connection {} removed ({:?})", c.id, c.close_reason);
        // Dropping the socket closes it; epoll forgets a closed descriptor.
    }

    /// Closes (1008) the connections that went over their outbound bound
    /// during the fan-out just done.
    pub(super) fn close_slow_consumers(&mut self) {
        for entry in std::mem::take(&mut self.slow) {
            // Only the connection that went over its bound: the key may be
            // stale (that one removed, the key given to a new connection).
            let Some(c) = self.listed(entry, flag::SLOW) else { continue };
            log::debug!("connection {} is a slow consumer ({} bytes queued); closing it (1008)", c.id, c.out.bytes());
            let key = entry.0;
            // Reading too slowly is not misbehaviour: what it still sends is published.
            self.start_close(key, 1008, "slow consumer", CloseReason::SlowConsumer, true);
        }
    }

    // ------------------------------------------------------------ drain

    /// Starts the drain (once): see the module doc.
    pub(super) fn begin_drain(&mut self) {
        if self.drain.is_some() {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let (targets, idle_http) = drain::select(self.conns.iter());
        for key in idle_http {
            self.doom(key);
        }
        log::info!(
            "worker {}: closing {} connections over {:?}",
            self.index,
            targets.len(),
            self.state.config.drain_window
        );
        self.drain = Some(DrainPlan::new(Instant::now(), self.state.config.drain_window, targets));
        self.drain_step();
    }

    /// Closes the connections whose turn has come in the drain window.
    pub(super) fn drain_step(&mut self) {
        let Some(plan) = &mut self.drain else { return };
        let batch = plan.due(Instant::now()).to_vec();
        for (key, id) in batch {
            if self.conns.get(key).is_some_and(|c| c.id == id && !c.close_sent()) {
                self.queue_frame(key, encoder::frame(OpCode::Data(Data::Text), DRAIN_NOTICE.as_bytes()).into());
                self.start_close(key, 1001, "going away", CloseReason::Drain, true);
            }
        }
    }
}
