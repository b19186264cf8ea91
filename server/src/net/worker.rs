//! Worker: one event-loop thread. Owns its Poll, listener, connections
//! (a slab keyed by mio token), room index and scratch buffer.
//!
//! One iteration of the loop:
//! 1. `poll` (the timeout is 0 when work was left over, else the time to
//!    the next drain close or clock tick);
//! 2. dispatch events: accept until WouldBlock; read each readable
//!    connection until WouldBlock or its read budget; a writable event
//!    only re-arms the connection's pending write;
//! 3. drain the inbox (broadcasts, rejects, drain orders), bounded;
//! 4. once a second, the tick: handshake and close deadlines, pings,
//!    silent clients, release of idle buffers, a paused accept;
//! 5. `before_sleep`: write every pending connection (one vectored write
//!    gathers what piled up), then remove the connections marked DOOMED.
//!
//! Every handler for one connection runs under `catch_unwind`: a panic
//! closes that connection and is counted; the worker goes on.
//!
//! With `ADMIN_PORT` set, each worker also owns a listener on that port
//! (SO_REUSEPORT, like the public one). Its connections carry the ADMIN
//! flag and go through the same HTTP code, restricted to the operator
//! endpoints ([`routes::route_on`]); it stays open while the worker drains,
//! so the kubelet's probes keep their answers (`/health` 200, `/ready` 503)
//! until the worker's last client is closed.
//!
//! permessage-deflate: a connection that negotiated it carries the DEFLATE
//! flag and nothing else. Its compressed messages are inflated with the
//! worker's one [`Inflater`]; broadcasts arrive compressed once by the
//! sequencer (`hub::fan_out`); its own replies (welcome, echo, errors) are
//! compressed with this thread's compressor when long enough.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::IpAddr;
use std::net::Shutdown;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::conn::{flag, ChatSession, Conn, Phase as ConnPhase, Service};
use super::outq::{Chunk, SocketSink};
use super::pacing::FlushPacer;
use crate::channels::{LoadRequest, Reply};
use crate::chat::history::{Backing, Entry};
use crate::chat::protocol::{self, Reject, Welcome, DRAIN_NOTICE};
use crate::chat::ratelimit::TokenBucket;
use crate::chat::rooms::RoomIndex;
use crate::clock;
use crate::http::extensions::Offers;
use crate::http::request::parse_head;
use crate::http::response::Response;
use crate::http::routes::{self, Listener, Route, UpgradeKind};
use crate::http::upgrade;
use crate::hub::inbox::{Inbox, ToWorker};
use crate::hub::{HubCommand, Origin, Publish};
use crate::metrics::{CloseReason, WorkerMetrics};
use crate::state::ServerState;
use crate::ws::deflate::SMALL_WINDOW_MAX_LEN;
use crate::ws::{encoder, Control, Data, Inflater, Limits, Message, OpCode, Role, WsError};

/// Token of the listener (slab keys never reach the top of the range).
pub const LISTENER: Token = Token(usize::MAX - 1);
/// Token of the inbox waker.
pub const WAKER: Token = Token(usize::MAX - 2);
/// Token of the admin listener (`ADMIN_PORT`).
pub const ADMIN_LISTENER: Token = Token(usize::MAX - 3);

/// Size of the per-worker read buffer lent to each connection as it reads.
const SCRATCH_LEN: usize = 64 * 1024;
/// Bytes read from one connection per event before others get a turn.
const READ_BUDGET: usize = 256 * 1024;
/// Bytes written to one connection per iteration before others get a turn.
const WRITE_BUDGET: usize = 1024 * 1024;
/// Inbox messages handled per iteration.
const INBOX_BUDGET: usize = 8192;
/// Seconds allowed for a close handshake (and lingering) before the socket is dropped.
const CLOSE_TIMEOUT_SECS: u32 = 5;
/// Rate-limited messages in a row that close the connection (1008).
const MAX_STRIKES: u8 = 10;
/// Events taken per poll.
const EVENTS_CAPACITY: usize = 1024;
/// Seconds a resume may wait for this pod to catch up with its `since`.
const CATCH_UP_SECS: u32 = 2;
/// Close code when a connection's token expires (private-use range, docs/protocol.md).
pub const TOKEN_EXPIRED_CLOSE: u16 = 4001;

/// An entry of a deferred work list: slab key and connection id.
type Listed = (usize, u64);

/// Closing every connection over the drain window.
#[derive(Debug)]
struct DrainPlan {
    start: Instant,
    window: Duration,
    /// Connections to close, with their ids (keys may be reused meanwhile).
    targets: Vec<(usize, u64)>,
    /// How many of `targets` have been closed.
    next: usize,
}

/// One event-loop thread's state.
#[derive(Debug)]
pub struct Worker {
    /// Index among the workers (for metrics and origins).
    index: usize,
    poll: Poll,
    /// `None` once draining closed it.
    listener: Option<TcpListener>,
    /// The `ADMIN_PORT` listener, if configured; open until the worker stops.
    admin: Option<TcpListener>,
    /// accept() failed for lack of descriptors: retry on the tick.
    /// Per listener (public, admin).
    accept_paused: [bool; 2],
    conns: Slab<Conn>,
    rooms: RoomIndex,
    inbox: Inbox,
    /// Messages were left in the inbox: poll without sleeping.
    inbox_more: bool,
    /// When the next flush pass may start (see net::pacing).
    pacer: FlushPacer,
    /// Lent to a connection for each read; a connection keeps bytes only
    /// when a partial frame or request remains.
    scratch: Vec<u8>,
    /// Connections with output to write in `before_sleep`.
    ///
    /// Every deferred list holds (slab key, connection id): a key outlives
    /// its connection on a list filled after the list was last drained, and
    /// `accept` reuses keys, so each entry is acted on only if the
    /// connection at that key still has that id and the list's flag
    /// ([`Worker::listed`]).
    pending_write: Vec<Listed>,
    /// Spare list swapped with `pending_write` while flushing.
    flushing: Vec<Listed>,
    /// Connections whose read budget ran out.
    pending_read: Vec<Listed>,
    /// Connections to remove in `before_sleep`.
    doomed: Vec<Listed>,
    /// Connections over their outbound bound, closed after the current fan-out.
    slow: Vec<Listed>,
    /// Resumes waiting for this pod to catch up with their `since`:
    /// (key, connection id, deadline), see [`Worker::complete_join`].
    catching_up: Vec<(usize, u64, u32)>,
    state: Arc<ServerState>,
    /// Seconds since the process started (coarse clock for deadlines).
    now: u32,
    /// Milliseconds since the process started (rate limits).
    now_ms: u32,
    /// `now` at the last tick.
    last_tick: u32,
    drain: Option<DrainPlan>,
    limits: Limits,
    /// An empty ping frame, shared by every ping this worker sends.
    ping_frame: Arc<[u8]>,
    /// Connections counted against MAX_CONNECTIONS_PER_IP, with their
    /// address (empty unless that limit is set); released in `remove`.
    peer_slots: HashMap<usize, IpAddr>,
    /// Chat connections authenticated by a token (empty with authentication
    /// off, so a connection costs nothing more then); removed in `remove`.
    authenticated: HashMap<usize, Authenticated>,
    /// Inflates every compressed message of this worker's connections
    /// (reset per message); created on first use, out of `self` while
    /// `process` runs.
    inflater: Option<Box<Inflater>>,
}

/// What a chat connection's token said, kept beside the connection rather
/// than in it: without authentication no connection pays for it.
#[derive(Debug)]
struct Authenticated {
    /// The token's `sub`: each message's `userId`. The chat name is the
    /// token's too (the session's `name`); a frame's `username` is ignored.
    user_id: Box<str>,
    /// Worker clock (s) at which the token expires: the tick closes the
    /// connection then (4001).
    expires: u32,
}

impl Worker {
    /// A worker for `poll`, which already has `inbox`'s waker registered under [`WAKER`].
    pub fn new(
        index: usize,
        poll: Poll,
        (mut listener, mut admin): (TcpListener, Option<TcpListener>),
        inbox: Inbox,
        state: Arc<ServerState>,
    ) -> io::Result<Worker> {
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        if let Some(admin) = &mut admin {
            poll.registry().register(admin, ADMIN_LISTENER, Interest::READABLE)?;
        }
        let limits = Limits { role: Role::Server, max_message: state.config.max_message_bytes };
        Ok(Worker {
            index,
            poll,
            listener: Some(listener),
            admin,
            accept_paused: [false; 2],
            conns: Slab::with_capacity(1024),
            rooms: RoomIndex::new(),
            inbox,
            inbox_more: false,
            pacer: FlushPacer::new(state.config.write_duty_percent, Instant::now()),
            scratch: vec![0; SCRATCH_LEN],
            pending_write: Vec::new(),
            flushing: Vec::new(),
            pending_read: Vec::new(),
            doomed: Vec::new(),
            slow: Vec::new(),
            catching_up: Vec::new(),
            state,
            now: 0,
            now_ms: 0,
            last_tick: 0,
            drain: None,
            limits,
            ping_frame: encoder::frame(OpCode::Control(Control::Ping), b"").into(),
            peer_slots: HashMap::new(),
            authenticated: HashMap::new(),
            inflater: None,
        })
    }

    /// The connection a deferred-list entry names, if it is still that
    /// connection (same id) and still carries the list's flag `f`.
    fn listed(&mut self, (key, id): Listed, f: u16) -> Option<&mut Conn> {
        self.conns.get_mut(key).filter(|c| c.id == id && c.has(f))
    }

    fn metrics(&self) -> &WorkerMetrics {
        &self.state.metrics.workers[self.index]
    }

    /// The client address of connection `key` (the socket's peer).
    fn peer(&self, key: usize) -> Option<IpAddr> {
        self.conns.get(key).and_then(|c| c.socket.peer_addr().ok()).map(|a| a.ip())
    }

    /// Runs the loop until the drain is complete.
    pub fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        self.update_clock();
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("worker {}: poll failed: {e}; stopping", self.index);
                    break;
                }
            }
            self.update_clock();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept_all(Listener::Public),
                    ADMIN_LISTENER => self.accept_all(Listener::Admin),
                    WAKER => self.inbox.clear_notified(),
                    Token(key) => {
                        let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                        self.on_event(key, readable, event.is_writable());
                    }
                }
            }
            self.drain_inbox();
            self.read_pending();
            if self.now != self.last_tick {
                self.last_tick = self.now;
                self.on_tick();
            }
            self.drain_step();
            if self.pacer.due(Instant::now()) {
                self.before_sleep();
            }
            self.remove_doomed();
            if self.finished() {
                break;
            }
        }
        let left: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in left {
            self.remove(key);
        }
        log::debug!("worker {} stopped", self.index);
    }

    fn update_clock(&mut self) {
        let elapsed = self.state.started.elapsed();
        self.now = elapsed.as_secs() as u32;
        self.now_ms = elapsed.as_millis() as u32;
    }

    fn poll_timeout(&self) -> Duration {
        if self.inbox_more || !self.pending_read.is_empty() {
            return Duration::ZERO;
        }
        if !self.pending_write.is_empty() {
            return self.pacer.wait(Instant::now());
        }
        let to_tick = Duration::from_millis(1000 - u64::from(self.now_ms % 1000));
        match &self.drain {
            Some(plan) if plan.next < plan.targets.len() => {
                let due = plan.window.mul_f64((plan.next + 1) as f64 / plan.targets.len() as f64);
                due.saturating_sub(plan.start.elapsed()).min(to_tick)
            }
            _ => to_tick,
        }
    }

    // ------------------------------------------------------------ accepting

    fn accept_all(&mut self, from: Listener) {
        loop {
            let listener = match from {
                Listener::Public => &self.listener,
                Listener::Admin => &self.admin,
            };
            let Some(listener) = listener else { return };
            match listener.accept() {
                Ok((mut socket, peer)) => {
                    self.metrics().accepted.fetch_add(1, Relaxed);
                    if let Err(e) = socket.set_nodelay(true) {
                        log::debug!("set_nodelay {peer}: {e}");
                    }
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    if let Err(e) =
                        self.poll.registry().register(&mut socket, Token(key), Interest::READABLE | Interest::WRITABLE)
                    {
                        log::warn!("registering a connection from {peer} failed: {e}");
                        continue;
                    }
                    let id = self.state.next_conn_id();
                    let handshake = self.state.config.handshake_timeout.as_secs() as u32;
                    let conn = entry.insert(Conn::new(socket, id, self.now, handshake));
                    if from == Listener::Admin {
                        conn.flags |= flag::ADMIN;
                    }
                    self.metrics().http_connections.fetch_add(1, Relaxed);
                    log::trace!("accepted {peer} as connection {id}");
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_paused[from as usize] = false;
                    return;
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted) => {}
                Err(e) => {
                    // EMFILE/ENFILE and the like: the backlog keeps the
                    // connections; the tick retries once descriptors free up.
                    self.metrics().accept_errors.fetch_add(1, Relaxed);
                    if !self.accept_paused[from as usize] {
                        log::warn!(
                            "worker {}: accept failed ({e}) with {} connections open; retrying every second",
                            self.index,
                            self.conns.len()
                        );
                    }
                    self.accept_paused[from as usize] = true;
                    return;
                }
            }
        }
    }

    // ------------------------------------------------------------ events

    fn on_event(&mut self, key: usize, readable: bool, writable: bool) {
        if !self.conns.contains(key) {
            // Entries are freed only in before_sleep, after the poll batch, and a
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

    fn on_panic(&mut self, key: usize) {
        self.metrics().panics.fetch_add(1, Relaxed);
        if self.scratch.len() < SCRATCH_LEN {
            self.scratch = vec![0; SCRATCH_LEN];
        }
        if let Some(c) = self.conns.get_mut(key) {
            log::error!("worker {}: handler panicked on connection {}; closing it", self.index, c.id);
            c.set_reason(CloseReason::Panic);
            c.flags |= flag::DISCARD_INPUT;
            self.doom(key);
        }
    }

    fn read_pending(&mut self) {
        let list = std::mem::take(&mut self.pending_read);
        for entry in list {
            if let Some(c) = self.listed(entry, flag::READ_PENDING) {
                c.flags &= !flag::READ_PENDING;
                self.on_event(entry.0, true, false);
            }
        }
    }

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
                    if matches!(c.phase, ConnPhase::Ws { .. }) {
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

    fn on_eof(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if matches!(c.phase, ConnPhase::Ws { .. }) {
            c.set_reason(CloseReason::Reset);
        }
        if c.out.is_empty() || c.has(flag::LINGER) {
            self.doom(key);
        } else {
            // Finish writing what is queued (an HTTP client may half-close after its request).
            c.flags |= flag::CLOSE_AFTER_FLUSH | flag::DISCARD_INPUT | flag::PEER_EOF;
            self.schedule_write(key);
        }
    }

    /// Handles `n` fresh bytes in the scratch buffer.
    fn on_bytes(&mut self, key: usize, n: usize) {
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.has(flag::DISCARD_INPUT) {
            return;
        }
        if c.inbuf.is_empty() {
            // The common case: parse straight from the scratch buffer and
            // keep only an incomplete tail.
            let mut scratch = std::mem::take(&mut self.scratch);
            let used = self.process(key, &mut scratch[..n]);
            if used < n {
                if let Some(c) = self.conns.get_mut(key) {
                    if !c.has(flag::DISCARD_INPUT) {
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
                if !c.has(flag::DISCARD_INPUT) {
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

    fn process_with(&mut self, key: usize, buf: &mut [u8], inflater: &mut Option<Box<Inflater>>) -> usize {
        let mut off = 0;
        loop {
            let Some(c) = self.conns.get_mut(key) else { return buf.len() };
            if c.has(flag::DISCARD_INPUT | flag::DOOMED) {
                return buf.len();
            }
            match &mut c.phase {
                ConnPhase::Http => match parse_head(&buf[off..], self.state.config.max_request_bytes) {
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
                // DISCARD_INPUT is set while a deferred response is pending.
                ConnPhase::HistoryLoad { .. } => return buf.len(),
                ConnPhase::Ws { decoder, .. } => match decoder.decode_with(
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

    // ------------------------------------------------------------ HTTP

    fn on_request(&mut self, key: usize, head: &crate::http::request::Head<'_>) {
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
                    c.phase = ConnPhase::HistoryLoad { room, limit, head_only };
                    c.flags |= flag::DISCARD_INPUT; // its response is the last
                }
            }
        }
    }

    /// The history loader answered a deferred `/history`.
    fn answer_history(&mut self, key: usize, older: &[Entry]) {
        let Some(c) = self.conns.get_mut(key) else { return };
        let ConnPhase::HistoryLoad { room, limit, head_only } = std::mem::replace(&mut c.phase, ConnPhase::Http) else {
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
    fn respond(&mut self, key: usize, resp: Response, keep_alive: bool, head_only: bool) {
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
                c.flags |= flag::CLOSE_AFTER_FLUSH | flag::DISCARD_INPUT;
                c.deadline = now + CLOSE_TIMEOUT_SECS;
            }
        }
    }

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
        self.queue(key, upgrade::switching_protocols(accept, deflate).into());
        let m = &self.state.metrics.workers[self.index];
        let Some(c) = self.conns.get_mut(key) else { return };
        c.flags = (c.flags & !flag::HTTP) | flag::WS_SLOT;
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
                        let expires = expiry_tick(self.state.started, id.expires);
                        self.authenticated.insert(key, Authenticated { user_id: id.user_id.into(), expires });
                        id.name
                    }
                    None => params.name,
                };
                Service::Chat(Box::new(ChatSession {
                    room: self.rooms.intern(&params.room),
                    slot: 0,
                    joined: false,
                    since: params.since,
                    name: name.into_boxed_str(),
                    delivered: 0,
                    bucket: TokenBucket::new(self.state.config.rate_burst, self.now_ms),
                    strikes: 0,
                }))
            }
        };
        let is_chat = matches!(service, Service::Chat(_));
        c.phase = ConnPhase::Ws { decoder: crate::ws::Decoder::new(), service };
        log::debug!("connection {} upgraded", c.id);
        if is_chat {
            self.join(key);
        }
    }

    // ------------------------------------------------------------ chat

    /// Joins the connection to its room — at once when this pod's history
    /// has what the client needs, otherwise after the history loader has
    /// fetched it (a cold room, or a resume from before the ring).
    fn join(&mut self, key: usize) {
        let state = self.state.clone();
        let Some(c) = self.conns.get_mut(key) else { return };
        let conn_id = c.id;
        let Some(chat) = c.chat() else { return };
        // Replica mode: the pod listens to the room from now on (before the
        // load is asked for, see replica::subscriber).
        state.room_interest(&chat.room, true);
        if let Some(loader) = &state.loader {
            if state.history.needs_load(&chat.room, chat.since) {
                let reply = Some(Reply { worker: self.index, key, conn_id });
                if loader
                    .try_send(LoadRequest { room: chat.room.clone(), since: chat.since, last: None, reply })
                    .is_ok()
                {
                    return; // ToWorker::Loaded completes it
                }
                log::warn!("history loader saturated; joining room {} with the history held here", chat.room);
            }
        }
        self.complete_join(key, &[]);
    }

    /// Sends the welcome frame with the room's history and makes the
    /// connection a member of its room, atomically with respect to this
    /// worker's inbox: broadcasts handled after this point are either in
    /// the snapshot (skipped by `delivered`) or newer.
    ///
    /// In replica mode a resume can be *ahead* of this pod: the client saw
    /// seq S on another pod before this one's subscription delivered it.
    /// Joined now, it would be told `recovered: false` and then get S
    /// again. So the join waits (up to `CATCH_UP_SECS`) until this pod's
    /// room reaches S; only a room still behind after that has really
    /// restarted its sequence (`recovered: false`, as in single-node mode).
    fn complete_join(&mut self, key: usize, older: &[Entry]) {
        self.finish_join(key, older, false);
    }

    fn finish_join(&mut self, key: usize, older: &[Entry], waited: bool) {
        let state = self.state.clone();
        let now = self.now;
        let Some(c) = self.conns.get_mut(key) else { return };
        let conn_id = c.id;
        if c.has(flag::CLOSE_SENT) {
            return;
        }
        let Some(chat) = c.chat() else { return };
        if chat.joined {
            return;
        }
        let behind = chat.since.is_some_and(|s| s > state.history.last_seq(&chat.room));
        if behind && !waited && state.history.backing() != Backing::Memory {
            // `older` (from MongoDB) is below the ring, so below `since`:
            // nothing of it is sent after the wait either.
            self.catching_up.push((key, conn_id, now + CATCH_UP_SECS));
            return;
        }
        let snap = state.history.snapshot(&chat.room, chat.since, state.config.history_on_join, older);
        let welcome = Welcome {
            pod_name: &state.config.pod_name,
            connection: conn_id,
            room: &chat.room,
            last_seq: snap.last_seq,
            history: snap.entries.iter().map(Entry::json).collect(),
            recovered: snap.recovered,
        }
        .to_json();
        chat.delivered = snap.last_seq;
        chat.slot = self.rooms.join(&chat.room, key);
        chat.joined = true;
        let frame = reply_frame(c.flags, &state, OpCode::Data(Data::Text), welcome.as_bytes());
        // The welcome, like an HTTP response, is this client's own reply: allowed above the bound.
        c.allowance = c.allowance.saturating_add(u32::try_from(frame.len()).unwrap_or(u32::MAX));
        self.queue_frame(key, frame.into());
    }

    fn leave_room(&mut self, key: usize) {
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

    fn on_message(&mut self, key: usize, message: Message<'_>) {
        let Some(c) = self.conns.get_mut(key) else { return };
        let closing = c.has(flag::CLOSE_SENT);
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
                ConnPhase::Ws { service: Service::Echo, .. } => {
                    if !closing {
                        let frame = reply_frame(c.flags, &self.state, OpCode::Data(Data::Text), payload.as_bytes());
                        self.queue_frame(key, frame.into());
                    }
                }
                _ => self.on_chat(key, payload.as_text()),
            },
            Message::Binary(payload) => match &c.phase {
                ConnPhase::Ws { service: Service::Echo, .. } => {
                    if !closing {
                        let frame = reply_frame(c.flags, &self.state, OpCode::Data(Data::Binary), payload.as_bytes());
                        self.queue_frame(key, frame.into());
                    }
                }
                _ => self.reject(key, Reject::new("unsupported", "chat frames are JSON text, not binary")),
            },
        }
    }

    fn on_chat(&mut self, key: usize, text: &str) {
        let state = self.state.clone();
        let config = &state.config;
        let (now_ms, index) = (self.now_ms, self.index);
        let Some(c) = self.conns.get_mut(key) else { return };
        let conn_id = c.id;
        let Some(chat) = c.chat() else { return };
        let incoming = match protocol::parse_chat(text, &chat.name, config.max_chat_bytes) {
            Ok(m) => m,
            Err(reject) => return self.reject(key, reject),
        };
        if !chat.bucket.try_take(now_ms, config.rate_limit, config.rate_burst) {
            chat.strikes = chat.strikes.saturating_add(1);
            let abusive = chat.strikes >= MAX_STRIKES;
            self.reject(
                key,
                Reject::new(
                    "rate_limited",
                    format!("more than {} messages per second; message not sent", config.rate_limit),
                ),
            );
            if abusive {
                self.start_close(key, 1008, "rate limit exceeded", CloseReason::RateLimit, false);
            }
            return;
        }
        chat.strikes = 0;
        // With a token, a frame's `username` is ignored: the name is the token's.
        let user = if self.authenticated.is_empty() { None } else { self.authenticated.get(&key) };
        let username = if user.is_some() { chat.name.to_string() } else { incoming.username };
        let publish = Publish {
            room: chat.room.clone(),
            username,
            message: incoming.message,
            timestamp_ms: clock::unix_millis(),
            client_id: incoming.client_id,
            user_id: user.map(|u| u.user_id.to_string()),
            origin: Origin { worker: index, key, conn_id },
        };
        match state.publish.try_send(HubCommand::Publish(publish)) {
            Ok(()) => {
                self.metrics().messages_in.fetch_add(1, Relaxed);
            }
            Err(_) => self.reject(key, Reject::new("unavailable", "the server is overloaded; message not sent")),
        }
    }

    /// Answers a client frame with an error frame (if the connection may still send).
    fn reject(&mut self, key: usize, reject: Reject) {
        self.metrics().reject(reject.code);
        let Some(c) = self.conns.get_mut(key) else { return };
        if !c.has(flag::CLOSE_SENT) {
            let frame = reply_frame(c.flags, &self.state, OpCode::Data(Data::Text), reject.to_json().as_bytes());
            self.queue_frame(key, frame.into());
        }
    }

    // ------------------------------------------------------------ closing

    fn on_close_frame(&mut self, key: usize, close: Option<(u16, &str)>) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(key) else { return };
        c.flags |= flag::DISCARD_INPUT;
        if c.has(flag::CLOSE_SENT) {
            // The answer to our close: the handshake is complete; lingering ends at the peer's FIN.
            return;
        }
        // "If an endpoint receives a Close frame and did not previously send a
        //  Close frame, the endpoint MUST send a Close frame in response. (When
        //  sending a Close frame in response, the endpoint typically echos the
        //  status code it received.)" (§5.5.1)
        let payload = close.map_or_else(Vec::new, |(code, _)| encoder::close_payload(code, ""));
        c.set_reason(CloseReason::Client);
        c.flags |= flag::CLOSE_SENT | flag::CLOSE_AFTER_FLUSH;
        c.deadline = now + CLOSE_TIMEOUT_SECS;
        self.queue_frame(key, encoder::frame(OpCode::Control(Control::Close), &payload).into());
        self.leave_room(key);
    }

    fn on_protocol_error(&mut self, key: usize, e: WsError) {
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
    fn start_close(&mut self, key: usize, code: u16, text: &str, reason: CloseReason, keep_reading: bool) {
        let now = self.now;
        let Some(c) = self.conns.get_mut(key) else { return };
        if c.has(flag::CLOSE_SENT) {
            return;
        }
        if reason == CloseReason::SlowConsumer {
            let dropped = c.out.discard_unstarted();
            self.state.metrics.workers[self.index].outbound_bytes.fetch_sub(dropped as i64, Relaxed);
        }
        c.set_reason(reason);
        c.flags |= flag::CLOSE_SENT | flag::CLOSE_AFTER_FLUSH;
        if !keep_reading {
            c.flags |= flag::DISCARD_INPUT;
        }
        c.deadline = now + CLOSE_TIMEOUT_SECS;
        self.queue_frame(key, encoder::close_frame(code, text).into());
        self.leave_room(key);
    }

    fn doom(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            enlist(c, key, flag::DOOMED, &mut self.doomed);
        }
    }

    /// Removes a connection: out of its room, out of the gauges, socket closed.
    fn remove(&mut self, key: usize) {
        self.leave_room(key);
        let Some(mut c) = self.conns.try_remove(key) else { return };
        if let Some(chat) = c.chat() {
            self.state.room_interest(&chat.room, false);
        }
        if let Some(ip) = self.peer_slots.remove(&key) {
            self.state.peers.release(ip);
        }
        self.authenticated.remove(&key);
        let m = &self.state.metrics.workers[self.index];
        if c.has(flag::HTTP) {
            m.http_connections.fetch_sub(1, Relaxed);
        }
        if c.has(flag::WS_SLOT) {
            m.ws_connections.fetch_sub(1, Relaxed);
            self.state.release_ws();
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

    // ------------------------------------------------------------ output

    fn queue_frame(&mut self, key: usize, chunk: Chunk) {
        self.metrics().frames_out.fetch_add(1, Relaxed);
        if chunk.is_compressed() {
            self.metrics().compressed_frames_out.fetch_add(1, Relaxed);
        }
        self.queue(key, chunk);
    }

    /// Queues output on a connection and marks it for `before_sleep`.
    fn queue(&mut self, key: usize, chunk: Chunk) {
        let max = self.state.config.max_outbound_bytes;
        let m = &self.state.metrics.workers[self.index];
        let Some(c) = self.conns.get_mut(key) else { return };
        let before = c.out.bytes();
        c.out.push(chunk);
        m.outbound_bytes.fetch_add((c.out.bytes() - before) as i64, Relaxed);
        check_bound(c, key, max, &mut self.slow);
        self.schedule_write(key);
    }

    fn schedule_write(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            enlist(c, key, flag::IN_PENDING, &mut self.pending_write);
        }
    }

    fn close_slow_consumers(&mut self) {
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

    /// Writes every pending connection, then removes the doomed ones.
    /// The flush pass: writes every pending connection once (the pacer
    /// decides when it runs).
    fn before_sleep(&mut self) {
        let start = Instant::now();
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
    fn remove_doomed(&mut self) {
        for entry in std::mem::take(&mut self.doomed) {
            if self.listed(entry, flag::DOOMED).is_some() {
                self.remove(entry.0);
            }
        }
    }

    fn flush(&mut self, key: usize) {
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
                    if c.has(flag::CLOSE_AFTER_FLUSH) && !c.has(flag::LINGER) {
                        if c.has(flag::PEER_EOF) {
                            self.doom(key);
                        } else {
                            // Our last bytes are out: send FIN and read until the peer's.
                            let _ = c.socket.shutdown(Shutdown::Write);
                            c.flags |= flag::LINGER;
                            c.deadline = now + CLOSE_TIMEOUT_SECS;
                        }
                    }
                }
            }
            Err(e) => {
                log::debug!("write error on connection {}: {e}", c.id);
                if matches!(c.phase, ConnPhase::Ws { .. }) {
                    c.set_reason(CloseReason::Error);
                }
                self.doom(key);
            }
        }
    }

    // ------------------------------------------------------------ inbox

    fn drain_inbox(&mut self) {
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
                    Some(c) if c.id == conn_id && matches!(c.phase, ConnPhase::HistoryLoad { .. }) => {
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
            if c.has(flag::CLOSE_SENT | flag::SLOW | flag::DOOMED) {
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
    fn resume_caught_up(&mut self, reached: Option<(&str, u64)>) {
        let now = self.now;
        let mut ready = Vec::new();
        let conns = &self.conns;
        self.catching_up.retain(|(key, conn_id, deadline)| {
            let Some((room, since)) = conns.get(*key).filter(|c| c.id == *conn_id).and_then(|c| c.waiting_resume())
            else {
                return false; // gone, or closed meanwhile
            };
            let done = match reached {
                Some((r, seq)) => room == r && seq >= since,
                None => now >= *deadline,
            };
            if done {
                ready.push(*key);
            }
            !done
        });
        for key in ready {
            self.finish_join(key, &[], true);
        }
    }

    // ------------------------------------------------------------ timers

    /// Once a second: deadlines, pings, silent clients, idle buffers.
    fn on_tick(&mut self) {
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
        let token_expired: Vec<usize> = self
            .authenticated
            .iter()
            .filter(|(key, a)| now >= a.expires && self.conns.get(**key).is_some_and(|c| !c.has(flag::CLOSE_SENT)))
            .map(|(key, _)| *key)
            .collect();
        for (key, c) in self.conns.iter_mut() {
            if c.has(flag::DOOMED) {
                continue;
            }
            let closing = c.has(flag::CLOSE_AFTER_FLUSH | flag::LINGER);
            match c.phase {
                ConnPhase::Http | ConnPhase::HistoryLoad { .. } if now >= c.deadline => {
                    if !closing {
                        c.set_reason(CloseReason::HandshakeTimeout);
                    }
                    expired.push(key);
                }
                ConnPhase::Ws { .. } if closing && now >= c.deadline => expired.push(key),
                ConnPhase::Ws { .. } if !c.has(flag::CLOSE_SENT) => {
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

    // ------------------------------------------------------------ drain

    fn begin_drain(&mut self) {
        if self.drain.is_some() {
            return;
        }
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let mut targets = Vec::new();
        let mut idle_http = Vec::new();
        for (key, c) in self.conns.iter() {
            match c.phase {
                ConnPhase::Ws { .. } if !c.has(flag::CLOSE_SENT) => targets.push((key, c.id)),
                ConnPhase::Http if c.out.is_empty() && c.inbuf.is_empty() => idle_http.push(key),
                _ => {}
            }
        }
        for key in idle_http {
            self.doom(key);
        }
        log::info!(
            "worker {}: closing {} connections over {:?}",
            self.index,
            targets.len(),
            self.state.config.drain_window
        );
        self.drain =
            Some(DrainPlan { start: Instant::now(), window: self.state.config.drain_window, targets, next: 0 });
        self.drain_step();
    }

    /// Closes the connections whose turn has come in the drain window.
    fn drain_step(&mut self) {
        let Some(plan) = &mut self.drain else { return };
        let total = plan.targets.len();
        let due = if plan.window.is_zero() {
            total
        } else {
            let frac = plan.start.elapsed().as_secs_f64() / plan.window.as_secs_f64();
            ((total as f64 * frac).ceil() as usize).min(total)
        };
        let batch: Vec<(usize, u64)> = plan.targets[plan.next.min(due)..due].to_vec();
        plan.next = plan.next.max(due);
        for (key, id) in batch {
            if self.conns.get(key).is_some_and(|c| c.id == id && !c.has(flag::CLOSE_SENT)) {
                self.queue_frame(key, encoder::frame(OpCode::Data(Data::Text), DRAIN_NOTICE.as_bytes()).into());
                self.start_close(key, 1001, "going away", CloseReason::Drain, true);
            }
        }
    }

    fn finished(&self) -> bool {
        match &self.drain {
            Some(plan) => {
                let done = plan.next >= plan.targets.len() && self.conns.is_empty();
                let overdue =
                    plan.start.elapsed() > plan.window + Duration::from_secs(u64::from(CLOSE_TIMEOUT_SECS) + 2);
                done || overdue
            }
            None => false,
        }
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

/// A data frame for one connection's own reply (welcome, echo, error):
/// compressed with this thread's compressor when the connection negotiated
/// permessage-deflate and the payload is long enough (and fits a window the
/// client limited), plain otherwise.
fn reply_frame(flags: u16, state: &ServerState, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let compress = flags & flag::DEFLATE != 0
        && payload.len() >= state.config.compression_min_bytes
        && (flags & flag::DEFLATE_SMALL_WINDOW == 0 || payload.len() <= SMALL_WINDOW_MAX_LEN);
    if compress {
        encoder::compressed_frame(opcode, payload, None)
    } else {
        encoder::frame(opcode, payload)
    }
}

/// Marks `c` as a slow consumer when its queue passes the bound.
fn check_bound(c: &mut Conn, key: usize, max: usize, slow: &mut Vec<Listed>) {
    if c.out.bytes() > max + c.allowance as usize && !c.has(flag::CLOSE_SENT) {
        enlist(c, key, flag::SLOW, slow);
    }
}

/// Puts connection `key` on `list` once: `f` records that it is there.
/// The worker's work lists (pending writes and reads, slow consumers,
/// doomed connections) all follow this rule, so none holds a key twice.
fn enlist(c: &mut Conn, key: usize, f: u16, list: &mut Vec<Listed>) {
    if !c.has(f) {
        c.flags |= f;
        list.push((key, c.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::hub::inbox::inbox;

    /// A worker on a real loopback listener, with its inbox sender kept alive.
    fn worker() -> (Worker, std::net::SocketAddr, crate::hub::inbox::InboxSender) {
        let config = Config::from_lookup(|k| (k == "WORKERS").then(|| "1".to_string())).unwrap();
        let poll = Poll::new().unwrap();
        let (tx, rx) = inbox(mio::Waker::new(poll.registry(), WAKER).unwrap());
        let (publish, _) = crossbeam_channel::bounded(1);
        let state = Arc::new(ServerState::new(config, vec![tx.clone()], publish, None, None));
        let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        (Worker::new(0, poll, (listener, None), rx, state).unwrap(), addr, tx)
    }

    /// Accepts the connection just made (the listener is non-blocking).
    fn accept_one(w: &mut Worker) -> usize {
        let before = w.conns.len();
        for _ in 0..200 {
            w.accept_all(crate::http::routes::Listener::Public);
            if w.conns.len() > before {
                return w.conns.iter().map(|(k, _)| k).max().unwrap();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("no connection accepted");
    }

    #[test]
    fn a_stale_slow_consumer_entry_never_closes_the_connection_that_reuses_its_key() {
        let (mut w, addr, _tx) = worker();
        let _first = std::net::TcpStream::connect(addr).unwrap();
        let key = accept_one(&mut w);
        // It goes over its bound outside a fan-out (a pong, a ping), then is
        // removed in the same iteration: its entry stays on the slow list.
        let c = w.conns.get_mut(key).unwrap();
        check_bound(c, key, 0, &mut w.slow);
        c.out.push(Chunk::Shared(Arc::from(&b"x"[..])));
        check_bound(c, key, 0, &mut w.slow);
        assert_eq!(w.slow.len(), 1);
        w.doom(key);
        w.before_sleep();
        w.remove_doomed();
        assert!(!w.conns.contains(key));
        // A fresh connection, still in its HTTP phase, gets the same key.
        let _second = std::net::TcpStream::connect(addr).unwrap();
        assert_eq!(accept_one(&mut w), key, "the slab reuses the freed key");
        w.close_slow_consumers();
        let c = w.conns.get(key).unwrap();
        assert!(!c.has(flag::CLOSE_SENT), "the new connection was closed as a slow consumer");
        assert!(w.slow.is_empty());
        // Stale entries on the other lists are skipped as well.
        w.pending_read.push((key, c.id + 1000));
        w.doomed.push((key, c.id + 1000));
        w.read_pending();
        w.before_sleep();
        w.remove_doomed();
        assert!(w.conns.contains(key), "a stale doomed entry removed the new connection");
    }
}
