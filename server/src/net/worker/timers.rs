//! The worker's timers: the tick, once a second of the worker's clock
//! (seconds since the process started), run after the inbox.
//!
//! Data flow: one pass over the connections collects what is due (HTTP
//! handshakes and close handshakes past their deadline, silent clients,
//! clients to ping, tokens expired) and releases idle buffers; then each
//! is acted on: doomed, closed (1001, 4001) or pinged. A paused accept is
//! retried and resumes waiting for this pod are given up on at their
//! deadline (`recovered: false`).
//!
//! Invariants: a client is pinged once per silence (`PINGED`, cleared by
//! any byte read) and closed after two ping intervals without a byte; a
//! closing connection is dropped at its deadline whatever the peer does.

use super::{Worker, TOKEN_EXPIRED_CLOSE};
use crate::http::routes::Listener;
use crate::metrics::CloseReason;
use crate::net::conn::{flag, Phase};
use crate::net::outq::Chunk;

impl Worker {
    /// Once a second: deadlines, pings, silent clients, idle buffers.
    pub(super) fn on_tick(&mut self) {
        let now = self.now;
        // Fault injection for the tests of a worker's death (debug builds
        // only; never compiled into a release): worker 0 panics outside
        // every catch_unwind two seconds after the start.
        #[cfg(debug_assertions)]
        if self.index == 0 && now >= 2 && std::env::var_os("WS_TEST_FAULT").is_some_and(|v| v == "worker-panic") {
            panic!("injected fault (WS_TEST_FAULT=worker-panic): worker 0 panics outside catch_unwind");
        }
        let ping = self.state.config.ping_interval.as_secs() as u32;
        let mut expired = Vec::new();
        let mut silent = Vec::new();
        let mut to_ping = Vec::new();
        let mut token_expired = Vec::new();
        for (key, c) in self.conns.iter_mut() {
            if c.has(flag::DOOMED) {
                continue;
            }
            let closing = c.closing.is_closing();
            match c.phase {
                Phase::Http | Phase::HistoryLoad { .. } if now >= c.deadline => {
                    if !closing {
                        c.set_reason(CloseReason::HandshakeTimeout);
                    }
                    expired.push(key);
                }
                Phase::Ws { .. } if closing && now >= c.deadline => expired.push(key),
                // An open WebSocket's deadline is its token's expiry (NO_EXPIRY without one).
                Phase::Ws { .. } if !c.close_sent() && now >= c.deadline => token_expired.push(key),
                Phase::Ws { .. } if !c.close_sent() => {
                    let quiet = now.saturating_sub(c.last_rx);
                    if quiet >= 2 * ping {
                        silent.push(key);
                    } else if quiet >= ping && !c.has(flag::PINGED) {
                        c.flags |= flag::PINGED;
                        to_ping.push(key);
                    }
                }
                _ => {}
            }
            if c.out.is_empty() {
                c.out.release_if_empty();
            }
            if c.inbuf.is_empty() && c.inbuf.capacity() > 0 {
                c.inbuf = Vec::new();
            }
        }
        for key in expired {
            self.doom(key);
        }
        for key in silent {
            self.start_close(key, 1001, "no answer to ping", CloseReason::Timeout, false);
        }
        for key in token_expired {
            // Like a drain: what the client sent before it saw the close is still read.
            self.start_close(key, TOKEN_EXPIRED_CLOSE, "token expired", CloseReason::TokenExpired, true);
        }
        for key in to_ping {
            self.queue_frame(key, Chunk::Shared(self.ping_frame.clone()));
        }
        if let Some(inflater) = &mut self.inflater {
            inflater.trim();
        }
        for from in [Listener::Public, Listener::Admin] {
            if self.accept_paused[from as usize] {
                self.accept_all(from);
            }
        }
        if !self.catching_up.is_empty() {
            self.resume_caught_up(None);
        }
    }
}
