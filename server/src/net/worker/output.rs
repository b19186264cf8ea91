//! The worker's output side: queueing a connection's output, writing a
//! connection's own replies at once (its 101 and welcome, from the reply
//! buffer), and the flush pass before sleep that writes every pending
//! connection, with what a connection's queue emptying means for its close.
//!
//! Data flow: broadcasts are pushed by `inbox` straight onto the members'
//! queues; everything else goes through [`Worker::queue`] (or, for a
//! reply built in the worker's reply buffer, [`Worker::reply`] →
//! [`Worker::write_reply`], which writes it at once when nothing is queued
//! ahead of it); [`Worker::before_sleep`] writes the pending connections
//! when the pacer lets it run.
//!
//! Invariants: bytes for one connection reach the wire in the order they
//! were queued or replied (a reply is written at once only on an empty
//! queue; during an upgrade everything for that connection is gathered in
//! the reply buffer); only the first queued chunk can be partly written.

use std::io::{self, Write};
use std::net::Shutdown;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use super::{enlist, Listed, Worker, REPLY_KEEP, WRITE_BUDGET};
use crate::metrics::CloseReason;
use crate::net::conn::{flag, Closing, Conn, CLOSE_TIMEOUT_SECS};
use crate::net::outq::{Chunk, SocketSink};
use crate::state::ServerState;
use crate::ws::deflate::SMALL_WINDOW_MAX_LEN;
use crate::ws::{encoder, OpCode};

impl Worker {
    /// Queues one WebSocket frame (counted as a frame out).
    pub(super) fn queue_frame(&mut self, key: usize, chunk: Chunk) {
        self.count_frame(chunk.is_compressed());
        self.queue(key, chunk);
    }

    /// Counts one WebSocket frame out (and whether it is compressed).
    pub(super) fn count_frame(&self, compressed: bool) {
        self.metrics().frames_out.fetch_add(1, Relaxed);
        if compressed {
            self.metrics().compressed_frames_out.fetch_add(1, Relaxed);
        }
    }

    /// Queues output on a connection and marks it for `before_sleep` (or,
    /// during its upgrade, adds it to the reply gathered for it, in order).
    pub(super) fn queue(&mut self, key: usize, chunk: Chunk) {
        if self.gathering == Some(key) {
            self.reply.extend_from_slice(chunk.bytes());
            return;
        }
        let max = self.state.config.max_outbound_bytes;
        let m = &self.state.metrics.workers[self.index];
        let Some(c) = self.conns.get_mut(key) else { return };
        let before = c.out.bytes();
        c.out.push(chunk);
        m.outbound_bytes.fetch_add((c.out.bytes() - before) as i64, Relaxed);
        check_bound(c, key, max, &mut self.slow);
        self.schedule_write(key);
    }

    /// Builds a reply the connection is owed (`build` appends it to the
    /// buffer it is given) and sends it: added to the reply gathered during
    /// the connection's upgrade, else written at once ([`Worker::write_reply`]).
    pub(super) fn reply<R>(&mut self, key: usize, build: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        match self.gathering {
            Some(k) if k == key => build(&mut self.reply),
            Some(_) => {
                // Never expected: an upgrade gathers only its own connection's replies.
                let mut bytes = Vec::new();
                let r = build(&mut bytes);
                self.queue(key, bytes.into());
                r
            }
            None => {
                self.reply.clear();
                let r = build(&mut self.reply);
                self.write_reply(key);
                r
            }
        }
    }

    /// Writes the reply built in `self.reply` to connection `key` at once
    /// when nothing is queued ahead of it, so that no allocation made for it
    /// outlives this call: the opening of a connection (its 101 and welcome)
    /// then leaves only what the connection keeps, and the worker's heap
    /// holds no short-lived buffers between long-lived ones (docs/
    /// benchmarks.md, idle memory). What the socket does not take at once,
    /// or all of it behind queued output, is queued like any reply (allowed
    /// above the outbound bound, as the connection's own).
    pub(super) fn write_reply(&mut self, key: usize) {
        let reply = std::mem::take(&mut self.reply);
        self.send_reply(key, &reply);
        if reply.capacity() <= REPLY_KEEP {
            self.reply = reply; // a long history's welcome: not kept
        }
    }

    /// [`write_reply`](Self::write_reply) of `bytes` (apart, so that the
    /// reply buffer can be lent while `self` is borrowed).
    fn send_reply(&mut self, key: usize, bytes: &[u8]) {
        let max = self.state.config.max_outbound_bytes;
        let m = &self.state.metrics.workers[self.index];
        let Some(c) = self.conns.get_mut(key) else { return };
        let mut written = 0;
        if c.out.is_empty() && c.closing == Closing::Open && !c.has(flag::WRITE_BLOCKED | flag::DOOMED) {
            match SocketSink::new(&c.socket).write(bytes) {
                Ok(n) => {
                    written = n;
                    m.bytes_out.fetch_add(n as u64, Relaxed);
                    m.writes.fetch_add(1, Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => c.flags |= flag::WRITE_BLOCKED,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.write_failed(key, &e),
            }
        }
        if written < bytes.len() {
            let rest = bytes.len() - written;
            c.allowance = c.allowance.saturating_add(u32::try_from(rest).unwrap_or(u32::MAX));
            c.out.push_after_written(Chunk::Owned(bytes.into()), written);
            m.outbound_bytes.fetch_add(rest as i64, Relaxed);
            check_bound(c, key, max, &mut self.slow);
            self.schedule_write(key);
        }
    }

    /// Puts the connection on the pending-write list (once).
    pub(super) fn schedule_write(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            enlist(c, key, flag::IN_PENDING, &mut self.pending_write);
        }
    }

    /// The flush pass: writes every pending connection once (the pacer
    /// decides when it runs, and reads the clock it starts at).
    pub(super) fn before_sleep(&mut self, start: Instant) {
        std::mem::swap(&mut self.pending_write, &mut self.flushing);
        let mut list = std::mem::take(&mut self.flushing);
        for &entry in &list {
            if self.listed(entry, flag::IN_PENDING).is_none() {
                continue;
            }
            let key = entry.0;
            if let Err(e) = catch_unwind(AssertUnwindSafe(|| self.flush(key))) {
                drop(e);
                self.on_panic(key);
            }
        }
        list.clear();
        self.flushing = list;
        self.pacer.passed(start, Instant::now());
    }

    /// Removes the connections marked DOOMED, every loop turn.
    pub(super) fn remove_doomed(&mut self) {
        for entry in std::mem::take(&mut self.doomed) {
            if self.listed(entry, flag::DOOMED).is_some() {
                self.remove(entry.0);
            }
        }
    }

    /// Writes what the connection has queued, up to the write budget; once
    /// its queue is empty, a closing connection shuts its write side and
    /// lingers (or, after the peer's EOF, is removed).
    pub(super) fn flush(&mut self, key: usize) {
        let now = self.now;
        let m = &self.state.metrics.workers[self.index];
        let Some(c) = self.conns.get_mut(key) else { return };
        c.flags &= !flag::IN_PENDING;
        if c.has(flag::DOOMED | flag::WRITE_BLOCKED) {
            return; // a writable event re-arms a blocked connection
        }
        match c.out.write_to(&mut SocketSink::new(&c.socket), WRITE_BUDGET) {
            Ok(w) => {
                m.bytes_out.fetch_add(w.bytes as u64, Relaxed);
                m.writes.fetch_add(w.calls as u64, Relaxed);
                m.outbound_bytes.fetch_sub(w.bytes as i64, Relaxed);
                if w.blocked {
                    c.flags |= flag::WRITE_BLOCKED;
                } else if !c.out.is_empty() {
                    self.schedule_write(key); // budget used up: continue next iteration
                } else {
                    c.allowance = 0;
                    match c.closing {
                        Closing::PeerGone { .. } => self.doom(key),
                        // Both close frames are out and in: the handshake is
                        // complete, and the server closes first (RFC 6455 §7.1.1).
                        Closing::Flushing { close_sent: true, .. } if c.has(flag::CLOSE_RECEIVED) => self.doom(key),
                        Closing::Flushing { close_sent, input } => {
                            // Our last bytes are out: send FIN and read until the peer's.
                            let _ = c.socket.shutdown(Shutdown::Write);
                            c.closing = Closing::Lingering { close_sent, input };
                            c.deadline = now + CLOSE_TIMEOUT_SECS;
                        }
                        Closing::Open | Closing::Lingering { .. } => {}
                    }
                }
            }
            Err(e) => self.write_failed(key, &e),
        }
    }

    /// A write to connection `key` failed: it ends (counted as an error close).
    fn write_failed(&mut self, key: usize, e: &io::Error) {
        if let Some(c) = self.conns.get_mut(key) {
            log::debug!("write error on connection {}: {e}", c.id);
            if c.is_ws() {
                c.set_reason(CloseReason::Error);
            }
        }
        self.doom(key);
    }
}

/// A data frame for one connection's own reply (welcome, echo, error):
/// compressed with this thread's compressor when the connection negotiated
/// permessage-deflate and the payload is long enough (and fits a window the
/// client limited), plain otherwise.
pub(super) fn reply_frame(flags: u16, state: &ServerState, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    reply_frame_into(flags, state.config.compression_min_bytes, opcode, payload, &mut out);
    out
}

/// [`reply_frame`] appended to `out`, given `COMPRESSION_MIN_BYTES`;
/// returns whether the frame is compressed.
pub(super) fn reply_frame_into(
    flags: u16,
    min_bytes: usize,
    opcode: OpCode,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> bool {
    let compress = flags & flag::DEFLATE != 0
        && payload.len() >= min_bytes
        && (flags & flag::DEFLATE_SMALL_WINDOW == 0 || payload.len() <= SMALL_WINDOW_MAX_LEN);
    if compress {
        encoder::compressed_frame_into(opcode, payload, None, out)
    } else {
        encoder::frame_into(opcode, 0, payload, None, out);
        false
    }
}

/// Marks `c` as a slow consumer when its queue passes the bound.
pub(super) fn check_bound(c: &mut Conn, key: usize, max: usize, slow: &mut Vec<Listed>) {
    if c.out.bytes() > max + c.allowance as usize && !c.close_sent() {
        enlist(c, key, flag::SLOW, slow);
    }
}
