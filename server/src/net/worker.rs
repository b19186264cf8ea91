//! Worker: one event-loop thread. Owns its Poll, listener, connections
//! (a slab keyed by mio token), room index and scratch buffer.
//!
//! One iteration of the loop ([`Worker::run`]):
//! 1. `poll` (the timeout is 0 when work was left over, else the time to
//!    the next drain close or clock tick);
//! 2. dispatch events: accept until WouldBlock; read each readable
//!    connection until WouldBlock or its read budget (`input`); a writable
//!    event only re-arms the connection's pending write;
//! 3. drain the inbox (broadcasts, rejects, loads, drain orders), bounded
//!    (`inbox`);
//! 4. once a second, the tick: handshake and close deadlines, pings,
//!    silent clients, release of idle buffers, a paused accept (`timers`);
//!    then the drain plan's closes that are due (`closing`, `net::drain`);
//! 5. `before_sleep`, when the pacer lets it run (`net::pacing`): write
//!    every pending connection (one vectored write gathers what piled up);
//!    then, every turn, remove the connections marked DOOMED.
//!
//! This file keeps the loop and accepting. The rest of the worker is in
//! child modules, each an `impl Worker` block over the same state:
//! - `input`: reading a connection and parsing what it sent (HTTP request
//!   heads or WebSocket frames), dispatching each to `http` or `chat`;
//! - `http`: one HTTP request's route, response, upgrade, deferred `/history`;
//! - `chat`: carrying out the actions of `chat::session` (join, resume,
//!   messages), the broadcasts of the inbox, resumes catching up;
//! - `closing`: the close handshake, slow consumers, the drain, removal;
//! - `output`: queueing output, writing a connection's own replies at
//!   once (its 101 and welcome), the flush pass before sleep;
//! - `timers`: the once-a-second tick.
//!
//! Every handler for one connection runs under `catch_unwind`: a panic
//! closes that connection and is counted; the worker goes on.
//!
//! With `ADMIN_PORT` set, each worker also owns a listener on that port
//! (SO_REUSEPORT, like the public one). Its connections carry the ADMIN
//! flag and go through the same HTTP code, restricted to the operator
//! endpoints ([`crate::http::routes::route_on`]); it stays open while the worker drains,
//! so the kubelet's probes keep their answers (`/health` 200, `/ready` 503)
//! until the worker's last client is closed.
//!
//! permessage-deflate: a connection that negotiated it carries the DEFLATE
//! flag and nothing else. Its compressed messages are inflated with the
//! worker's one [`Inflater`]; broadcasts arrive compressed once by the
//! sequencer (`hub::fan_out`); its own replies (welcome, echo, errors) are
//! compressed with this thread's compressor when long enough.

mod chat;
mod closing;
mod http;
mod inbox;
mod input;
mod output;
mod timers;

use output::{check_bound, reply_frame, reply_frame_into};

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::conn::{flag, Conn};
use super::drain::DrainPlan;
use super::pacing::FlushPacer;
use crate::chat::rooms::RoomIndex;
use crate::http::routes::Listener;
use crate::hub::inbox::Inbox;
use crate::metrics::WorkerMetrics;
use crate::state::ServerState;
use crate::ws::{encoder, Control, Inflater, Limits, OpCode, Role};

/// Token of the listener (slab keys never reach the top of the range).
pub const LISTENER: Token = Token(usize::MAX - 1);
/// Token of the inbox waker.
pub const WAKER: Token = Token(usize::MAX - 2);
/// Token of the admin listener (`ADMIN_PORT`).
pub const ADMIN_LISTENER: Token = Token(usize::MAX - 3);

/// Size of the per-worker read buffer lent to each connection as it reads.
const SCRATCH_LEN: usize = 64 * 1024;
/// The reply buffer's capacity kept between replies (a welcome carrying a
/// long history may need more, once).
const REPLY_KEEP: usize = 64 * 1024;
/// Bytes written to one connection per iteration before others get a turn.
const WRITE_BUDGET: usize = 1024 * 1024;
/// Events taken per poll.
const EVENTS_CAPACITY: usize = 1024;
/// Close code when a connection's token expires (private-use range, docs/protocol.md).
pub const TOKEN_EXPIRED_CLOSE: u16 = 4001;

/// An entry of a deferred work list: slab key and connection id.
type Listed = (usize, u64);

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
    /// Connections to remove at the end of the loop turn (`remove_doomed`).
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
    /// Set once the drain began (`ToWorker::Drain`).
    drain: Option<DrainPlan>,
    limits: Limits,
    /// An empty ping frame, shared by every ping this worker sends.
    ping_frame: Arc<[u8]>,
    /// Connections counted against MAX_CONNECTIONS_PER_IP, with their
    /// address (empty unless that limit is set); released in `remove`.
    peer_slots: HashMap<usize, IpAddr>,
    /// The token user ids (`sub`) of chat connections whose chat name is
    /// not their user id (a `name` claim, or a `sub` longer than a name);
    /// removed in `remove`. Empty with authentication off, and for tokens
    /// whose `sub` is the name: those connections cost nothing more than
    /// unauthenticated ones (their expiry is the connection's `deadline`).
    user_ids: HashMap<usize, Box<str>>,
    /// Inflates every compressed message of this worker's connections
    /// (reset per message); created on first use, out of `self` while
    /// `process` runs.
    inflater: Option<Box<Inflater>>,
    /// The reply being built for one connection (its 101 and welcome, a
    /// deferred welcome), written from here at once by [`Worker::write_reply`];
    /// reused, so a connection's opening allocates nothing that outlives it.
    reply: Vec<u8>,
    /// The connection whose upgrade is being handled: its replies are
    /// gathered in `reply` and written together at the end of the upgrade.
    gathering: Option<usize>,
}

/// The `deadline` of an open WebSocket without a token: never.
const NO_EXPIRY: u32 = u32::MAX;

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
            user_ids: HashMap::new(),
            inflater: None,
            reply: Vec::new(),
            gathering: None,
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
            let now = Instant::now();
            if self.pacer.due(now) {
                self.before_sleep(now);
            }
            self.remove_doomed();
            if self.drain.as_ref().is_some_and(|plan| plan.finished(Instant::now(), !self.conns.is_empty())) {
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
        match self.drain.as_ref().and_then(|plan| plan.next_in(Instant::now())) {
            Some(next_close) => next_close.min(to_tick),
            None => to_tick,
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
#[path = "worker/tests.rs"]
mod tests;
