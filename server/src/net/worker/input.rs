//! The worker's input side: reading a connection and parsing what it sent.
//!
//! Data flow: a readable event (or a connection left over by its read
//! budget) → [`Worker::on_readable`] reads into the worker's scratch
//! buffer until WouldBlock or the budget → [`Worker::on_bytes`] parses in
//! place (a partial request or frame is kept in the connection's `inbuf`)
//! → each complete HTTP request head goes to `http`, each WebSocket
//! message to [`Worker::on_message`]: ping, pong and close are answered
//! here and in `closing`, echo here, chat text to `chat`.
//!
//! Invariants: nothing is read from a connection marked DOOMED; nothing
//! is parsed from one that ignores its input (`Conn::ignores_input`), and
//! then no partial input is kept either.

use std::io::{self, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;

use super::{enlist, reply_frame, Worker, SCRATCH_LEN};
use crate::chat::session;
use crate::http::request::parse_head;
use crate::http::response::Response;
use crate::metrics::CloseReason;
use crate::net::conn::{flag, Closing, Phase, Service};
use crate::ws::{encoder, Control, Data, Inflater, Message, OpCode};

/// Bytes read from one connection per event before others get a turn.
const READ_BUDGET: usize = 256 * 1024;

impl Worker {
    /// One readiness event of connection `key`, under `catch_unwind`.
    pub(super) fn on_event(&mut self, key: usize, readable: bool, writable: bool) {
        if !self.conns.contains(key) {
            // Entries are freed only at the end of a turn, after the poll batch, and a
            // freed socket is deregistered by dropping it, so no later event names
            // it. Defensive: a stale token must never index another connection.
            return;
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            if writable {
                if let Some(c) = self.conns.get_mut(key) {
                    c.flags &= !flag::WRITE_BLOCKED;
                    if !c.out.is_empty() {
                        self.schedule_write(key);
                    }
                }
            }
            if readable {
                self.on_readable(key);
            }
        }));
        if result.is_err() {
            self.on_panic(key);
        }
    }

    /// A handler panicked on connection `key`: count it and remove the connection.
    pub(super) fn on_panic(&mut self, key: usize) {
        self.metrics().panics.fetch_add(1, Relaxed);
        self.gathering = None; // an upgrade that panicked gathers nothing more
        if self.scratch.len() < SCRATCH_LEN {
            self.scratch = vec![0; SCRATCH_LEN];
        }
        if let Some(c) = self.conns.get_mut(key) {
            log::error!("worker {}: handler panicked on connection {}; closing it", self.index, c.id);
            c.set_reason(CloseReason::Panic);
            self.doom(key); // DOOMED: nothing more is read or parsed
        }
    }

    /// Reads again the connections whose read budget ran out last turn.
    pub(super) fn read_pending(&mut self) {
        let list = std::mem::take(&mut self.pending_read);
        for entry in list {
            if let Some(c) = self.listed(entry, flag::READ_PENDING) {
                c.flags &= !flag::READ_PENDING;
                self.on_event(entry.0, true, false);
            }
        }
    }

    /// Reads until WouldBlock, EOF, an error or the read budget.
    fn on_readable(&mut self, key: usize) {
        let mut budget = READ_BUDGET;
        loop {
            if self.scratch.len() < SCRATCH_LEN {
                self.scratch.resize(SCRATCH_LEN, 0);
            }
            let Some(c) = self.conns.get_mut(key) else { return };
            if c.has(flag::DOOMED) {
                return;
            }
            match c.socket.read(&mut self.scratch) {
                Ok(0) => {
                    self.on_eof(key);
                    return;
                }
                Ok(n) => {
                    c.last_rx = self.now;
                    c.flags &= !flag::PINGED;
                    self.metrics().bytes_in.fetch_add(n as u64, Relaxed);
                    self.on_bytes(key, n);
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        if let Some(c) = self.conns.get_mut(key).filter(|c| !c.has(flag::DOOMED)) {
                            enlist(c, key, flag::READ_PENDING, &mut self.pending_read);
                        }
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::debug!("read error on connection {}: {e}", c.id);
                    if c.is_ws() {
                        c.set_reason(if e.kind() == io::ErrorKind::ConnectionReset {
                            CloseReason::Reset
                        } else {
                            CloseReason::Error
                        });
                    }
                    self.doom(key);
                    return;
                }
            }
        }
    }

    /// The peer closed its side: remove at once, or after writing what is queued.
    fn on_eof(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.is_ws() {
            c.set_reason(CloseReason::Reset);
        }
        if c.out.is_empty() || matches!(c.closing, Closing::Lingering { .. }) {
            self.doom(key);
        } else {
            // Finish writing what is queued (an HTTP client may half-close after its request).
            c.closing = Closing::PeerGone { close_sent: c.close_sent() };
            self.schedule_write(key);
        }
    }

    /// Handles `n` fresh bytes in the scratch buffer.
    fn on_bytes(&mut self, key: usize, n: usize) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.ignores_input() {
            return;
        }
        if c.inbuf.is_empty() {
            // The common case: parse straight from the scratch buffer and
            // keep only an incomplete tail.
            let mut scratch = std::mem::take(&mut self.scratch);
            let used = self.process(key, &mut scratch[..n]);
            if used < n {
                if let Some(c) = self.conns.get_mut(key) {
                    if !c.ignores_input() {
                        c.inbuf.extend_from_slice(&scratch[used..n]);
                    }
                }
            }
            self.scratch = scratch;
        } else {
            let mut buf = std::mem::take(&mut c.inbuf);
            buf.extend_from_slice(&self.scratch[..n]);
            let used = self.process(key, &mut buf);
            buf.drain(..used);
            if let Some(c) = self.conns.get_mut(key) {
                if !c.ignores_input() {
                    c.inbuf = buf;
                }
            }
        }
    }

    /// Parses requests or frames from the front of `buf`; returns the bytes used.
    fn process(&mut self, key: usize, buf: &mut [u8]) -> usize {
        // Lent out so a message can borrow the inflated bytes while handled.
        let mut inflater = self.inflater.take();
        let used = self.process_with(key, buf, &mut inflater);
        self.inflater = inflater;
        used
    }

    /// [`process`](Self::process) with the worker's inflater lent out.
    fn process_with(&mut self, key: usize, buf: &mut [u8], inflater: &mut Option<Box<Inflater>>) -> usize {
        let mut off = 0;
        loop {
            let Some(c) = self.conns.get_mut(key) else { return buf.len() };
            if c.ignores_input() || c.has(flag::DOOMED) {
                return buf.len();
            }
            match &mut c.phase {
                Phase::Http => match parse_head(&buf[off..], self.state.config.max_request_bytes) {
                    Ok(None) => return off,
                    Ok(Some(head)) => {
                        off += head.len;
                        self.on_request(key, &head);
                    }
                    Err(e) => {
                        log::debug!("connection {}: {e}", c.id);
                        self.respond(key, Response::text(e.status(), &e.to_string()), false, false);
                        return buf.len();
                    }
                },
                // Input is ignored while a deferred response is pending.
                Phase::HistoryLoad { .. } => return buf.len(),
                Phase::Ws { decoder, .. } => match decoder.decode_with(
                    &mut buf[off..],
                    &self.limits,
                    if c.flags & flag::DEFLATE != 0 {
                        Some(&mut **inflater.get_or_insert_with(Box::default))
                    } else {
                        None
                    },
                ) {
                    Ok(None) => return off,
                    Ok(Some((used, message))) => {
                        off += used;
                        self.metrics().frames_in.fetch_add(1, Relaxed);
                        if let Some(m) = message {
                            self.on_message(key, m);
                        }
                    }
                    Err(e) => {
                        self.on_protocol_error(key, e);
                        return buf.len();
                    }
                },
            }
        }
    }

    /// One WebSocket message: ping, pong and close for every service; text
    /// and binary echoed (echo) or handed to the chat.
    fn on_message(&mut self, key: usize, message: Message<'_>) {
        let Some(c) = self.conns.get_mut(key) else { return };
        let closing = c.close_sent();
        match message {
            Message::Ping(payload) => {
                // "Upon receipt of a Ping frame, an endpoint MUST send a Pong frame in
                //  response, unless it already received a Close frame." (§5.5.2)
                if !closing {
                    self.queue_frame(key, encoder::frame(OpCode::Control(Control::Pong), payload).into());
                }
            }
            Message::Pong(_) => {}
            Message::Close(close) => self.on_close_frame(key, close),
            Message::Text(payload) => match &c.phase {
                Phase::Ws { service: Service::Echo, .. } => {
                    if !closing {
                        let frame = reply_frame(c.flags, &self.state, OpCode::Data(Data::Text), payload.as_bytes());
                        self.queue_frame(key, frame.into());
                    }
                }
                _ => self.on_chat(key, payload.as_text()),
            },
            Message::Binary(payload) => match &c.phase {
                Phase::Ws { service: Service::Echo, .. } => {
                    if !closing {
                        let frame = reply_frame(c.flags, &self.state, OpCode::Data(Data::Binary), payload.as_bytes());
                        self.queue_frame(key, frame.into());
                    }
                }
                _ => self.apply(key, session::on_binary()),
            },
        }
    }
}
