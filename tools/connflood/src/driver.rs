//! The event loop: one thread, one `mio::Poll`, every connection.
//!
//! It owns the sockets (a slab of [`Link`]s, keyed by mio token, present
//! only while a TCP connection exists), the clients (a `Vec` indexed by
//! connection number, always present), one timer heap (each client has at
//! most one pending deadline; stale heap entries are skipped), the ramp
//! (connection `i` starts at `i * ramp / N`), the send schedule and the
//! phases: ramp → run → settle → (judge) → closing → finished, bounded by
//! a hard deadline.
//!
//! Reads go into one shared scratch buffer and are decoded in place with
//! the server's codec; only a partial frame left at the end of a read is
//! copied into the connection's own buffer, so idle connections hold no
//! buffer memory.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io::{self, IsTerminal, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};
use websocket_server::ws::encoder::{close_payload, compressed_frame, frame_with_mask};
use websocket_server::ws::{Control, Data, Decoder, Inflater, Limits, Message, OpCode, Role, WsError};

use crate::checker::{Join, Rooms, Tally};
use crate::client::{assign, Backoff, Client, State, NO_DEADLINE};
use crate::config::Config;
use crate::handshake::{check, key_for, parse_response, HandshakeError, Template};
use crate::protocol::{self, chat_json, is_shutdown_notice, user_name, Marker};
use crate::report::{Outcome, Status};
use crate::rng::{fresh_seed, Rng};
use crate::stats::{process_usage, Counters, Histogram};
use crate::token;

/// Largest message accepted from the server (a join with a long history).
const MAX_MESSAGE: usize = 16 << 20;
/// Readiness events taken per poll.
const EVENTS: usize = 1024;
/// Size of the shared read buffer.
const READ_CHUNK: usize = 64 << 10;
/// A connection's leftover buffer larger than this is freed once empty.
const KEEP_BUFFER: usize = 16 << 10;
/// Time to wait for the server to end TCP after a close exchange.
const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// Longest sleep of the loop (so phase changes and status lines are timely).
const MAX_SLEEP: Duration = Duration::from_millis(250);
/// Time between two looks for `--stop-file` while sending.
const STOP_LOOK: Duration = Duration::from_millis(100);
/// Linux's EINPROGRESS: a non-blocking connect under way.
const EINPROGRESS: i32 = 115;
/// Linux's EMFILE: out of file descriptors.
const EMFILE: i32 = 24;

/// One TCP connection's socket and buffers.
struct Link {
    stream: TcpStream,
    conn: u32,
    /// Bytes received and not yet decoded (a partial frame or response head).
    rbuf: Vec<u8>,
    /// Bytes to send that the socket did not take yet.
    wbuf: Vec<u8>,
    decoder: Decoder,
    /// permessage-deflate was agreed to (`--deflate` and the server's answer).
    deflate: bool,
}

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    Ramp,
    Run,
    Settle,
    Closing,
    Finished,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Ramp => "ramp",
            Phase::Run => "run",
            Phase::Settle => "settle",
            Phase::Closing => "closing",
            Phase::Finished => "done",
        }
    }
}

/// Runs the load test against the resolved `addrs` (one per URL).
pub fn run(cfg: &Config, addrs: Vec<SocketAddr>) -> io::Result<Outcome> {
    let mut d = Driver::new(cfg, addrs)?;
    d.run()?;
    Ok(d.outcome())
}

struct Driver<'c> {
    cfg: &'c Config,
    /// Unix time (s) at which deliveries are judged (for token expiries).
    judge_unix: u64,
    addrs: Vec<SocketAddr>,
    templates: Vec<Template>,
    room_names: Vec<String>,
    interval_us: u64,
    tag: u32,
    seed: u64,
    rng: Rng,
    backoff: Backoff,
    poll: Poll,
    clients: Vec<Client>,
    links: Slab<Link>,
    timers: BinaryHeap<Reverse<(u64, u32)>>,
    rooms: Rooms,
    tally: Tally,
    counters: Counters,
    latency: Histogram,
    pods: Vec<String>,
    /// Inflates the compressed messages of every connection (reset per message).
    inflater: Option<Box<Inflater>>,
    /// Wire length and RSV1 of the frame being handled.
    last_frame: (usize, bool),
    pod_index: HashMap<String, u16>,
    pod_opens: Vec<u64>,
    connected: u64,
    failed: u64,
    start: Instant,
    phase: Phase,
    next_ramp: usize,
    ramp_us: u64,
    /// End of the sending time: ramp + duration, or earlier once the
    /// `--stop-file` is seen.
    send_end: u64,
    settle_end: u64,
    /// When to look for the `--stop-file` next.
    stop_look: u64,
    close_end: u64,
    hard_end: u64,
    judged: Option<Judged>,
    deadline_hit: bool,
    scratch: Vec<u8>,
    text: String,
    history: Vec<u64>,
    status: StatusState,
    /// Time each loop iteration spent working (not waiting), µs, until judged.
    busy: Histogram,
    /// Most events handled in one iteration.
    max_events: usize,
}

/// Figures fixed when the run is judged (end of settle).
struct Judged {
    at: u64,
    active: u64,
    lost_unseen: u64,
    pods_current: BTreeMap<String, u64>,
}

/// What the progress line needs between two lines.
struct StatusState {
    next: u64,
    last_t: u64,
    last_received: u64,
    last_cpu: f64,
    /// Latency of the deliveries since the last line (the line's p99).
    latency: Histogram,
    terminal: bool,
    printed: bool,
}

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn us(d: Duration) -> u64 {
    d.as_micros().min(u64::MAX as u128 / 2) as u64
}

/// A short label for an I/O error.
fn io_kind(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset => "reset",
        io::ErrorKind::ConnectionAborted => "aborted",
        io::ErrorKind::BrokenPipe => "broken_pipe",
        io::ErrorKind::AddrNotAvailable => "addr_not_available",
        io::ErrorKind::AddrInUse => "addr_in_use",
        io::ErrorKind::TimedOut => "timed_out",
        _ if e.raw_os_error() == Some(EMFILE) => "too_many_open_files",
        _ => "io_error",
    }
}

/// A non-blocking TCP socket connecting to `addr`, from `bind` if given.
fn open_socket(addr: SocketAddr, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    if let Some(ip) = bind {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(EINPROGRESS) || e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

impl<'c> Driver<'c> {
    fn new(cfg: &'c Config, addrs: Vec<SocketAddr>) -> io::Result<Driver<'c>> {
        let seed = cfg.seed.unwrap_or_else(fresh_seed);
        let mut rng = Rng::new(seed);
        let tag = rng.next_u64() as u32;
        let ramp_us = us(cfg.ramp_up);
        let send_end = ramp_us + us(cfg.duration);
        let settle_end = send_end + us(cfg.settle);
        let unix_now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Ok(Driver {
            cfg,
            judge_unix: unix_now + settle_end / 1_000_000,
            templates: cfg.urls.iter().map(|u| Template::new(u, cfg.deflate)).collect(),
            addrs,
            room_names: (0..cfg.rooms).map(|i| cfg.room_name(i)).collect(),
            interval_us: us(cfg.msg_interval).max(1),
            tag,
            seed,
            rng,
            backoff: Backoff::default(),
            poll: Poll::new()?,
            clients: vec![Client::default(); cfg.connections],
            links: Slab::with_capacity(cfg.connections.min(1 << 16)),
            timers: BinaryHeap::with_capacity(cfg.connections.min(1 << 20)),
            rooms: Rooms::new(cfg.rooms),
            tally: Tally::default(),
            counters: Counters::default(),
            latency: Histogram::new(),
            pods: Vec::new(),
            inflater: None,
            last_frame: (0, false),
            pod_index: HashMap::new(),
            pod_opens: Vec::new(),
            connected: 0,
            failed: 0,
            start: Instant::now(),
            phase: Phase::Ramp,
            next_ramp: 0,
            ramp_us,
            send_end,
            settle_end,
            stop_look: 0,
            close_end: u64::MAX,
            hard_end: us(cfg.hard_deadline()),
            judged: None,
            deadline_hit: false,
            scratch: vec![0; READ_CHUNK],
            text: String::with_capacity(cfg.payload + 128),
            history: Vec::new(),
            status: StatusState {
                next: us(cfg.status_every),
                last_t: 0,
                last_received: 0,
                last_cpu: 0.0,
                latency: Histogram::new(),
                terminal: io::stderr().is_terminal(),
                printed: false,
            },
            busy: Histogram::new(),
            max_events: 0,
        })
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(EVENTS);
        let mut work_started = self.now();
        loop {
            let now = self.now();
            if now >= self.hard_end {
                self.deadline_hit = true;
                break;
            }
            self.advance(now);
            if self.phase == Phase::Finished {
                break;
            }
            self.start_due(now);
            self.fire_timers(now);
            self.print_status(now);
            let before_poll = self.now();
            if self.judged.is_none() {
                // The run itself, not the final mass close.
                self.busy.record(before_poll - work_started);
            }
            let wait = self.next_wake(before_poll);
            match self.poll.poll(&mut events, Some(wait)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let now = self.now();
            work_started = now;
            self.max_events = self.max_events.max(events.iter().count());
            for ev in events.iter() {
                let readable = ev.is_readable() || ev.is_read_closed() || ev.is_error();
                let writable = ev.is_writable() || ev.is_write_closed() || ev.is_error();
                self.on_event(ev.token().0, readable, writable, now);
            }
        }
        let now = self.now();
        if self.judged.is_none() {
            self.judge(now);
        }
        self.print_status(u64::MAX);
        if self.status.printed && self.status.terminal {
            eprintln!();
        }
        Ok(())
    }

    // ----- phases -----------------------------------------------------------

    fn advance(&mut self, now: u64) {
        loop {
            let all_started = self.next_ramp >= self.clients.len();
            let phase = self.phase;
            let next = match phase {
                // Nothing can change any more: every connection gave up.
                p if p < Phase::Closing && all_started && self.failed == self.clients.len() as u64 => {
                    self.begin_closing(now);
                    continue;
                }
                Phase::Ramp if all_started && now >= self.ramp_us => Phase::Run,
                Phase::Run if now >= self.send_end => Phase::Settle,
                Phase::Run if self.stop_file_seen(now) => {
                    self.send_end = now;
                    self.settle_end = now + us(self.cfg.settle);
                    Phase::Settle
                }
                Phase::Settle if now >= self.settle_end => {
                    self.begin_closing(now);
                    continue;
                }
                Phase::Closing if self.links.is_empty() || now >= self.close_end => Phase::Finished,
                p => p,
            };
            if next == self.phase {
                return;
            }
            self.phase = next;
        }
    }

    /// Whether the `--stop-file` exists (looked for every [`STOP_LOOK`] at
    /// most, as one `stat` per loop turn would cost at high rates).
    fn stop_file_seen(&mut self, now: u64) -> bool {
        let cfg = self.cfg;
        let Some(path) = cfg.stop_file.as_deref() else { return false };
        if now < self.stop_look {
            return false;
        }
        self.stop_look = now + us(STOP_LOOK);
        path.exists()
    }

    /// Judges the run, then closes every open connection with 1000 and
    /// abandons every other attempt.
    fn begin_closing(&mut self, now: u64) {
        self.judge(now);
        self.phase = Phase::Closing;
        self.close_end = now + us(CLOSE_WAIT);
        for c in 0..self.clients.len() {
            match self.clients[c].state {
                State::Open => {
                    let frame = frame_with_mask(
                        OpCode::Control(Control::Close),
                        &close_payload(1000, ""),
                        Some(self.rng.mask()),
                    );
                    self.send(c, &frame);
                    if self.clients[c].state == State::Open {
                        self.clients[c].state = State::Closing;
                        self.set_deadline(c, self.close_end);
                    }
                }
                State::Connecting | State::Upgrading => {
                    self.drop_link(c);
                    self.clients[c].state = State::Done;
                    self.clients[c].deadline = NO_DEADLINE;
                }
                State::Idle | State::Backoff => {
                    self.clients[c].state = State::Done;
                    self.clients[c].deadline = NO_DEADLINE;
                }
                State::Closing | State::Failed | State::Done => {}
            }
        }
    }

    /// Fixes the verdict's figures: tail loss against each room's highest
    /// seq for the connections open now, unseen messages, pods.
    fn judge(&mut self, now: u64) {
        let mut active = 0;
        let mut lost_unseen = 0;
        let mut pods_current = BTreeMap::new();
        for (i, client) in self.clients.iter().enumerate() {
            let room = assign(i, self.cfg).room;
            if client.active() {
                active += 1;
                let room_max = self.rooms.max(room, client.track.epoch);
                client.track.finish(room_max, &mut self.tally);
                let pod = self.pods.get(client.pod as usize).map_or("?", String::as_str);
                *pods_current.entry(pod.to_string()).or_insert(0) += 1;
            } else {
                client.track.finish(None, &mut self.tally);
            }
            lost_unseen += client.outbox.unseen().saturating_sub(client.rejected) as u64;
        }
        self.judged = Some(Judged { at: now, active, lost_unseen, pods_current });
    }

    fn outcome(&mut self) -> Outcome {
        let judged = self.judged.take().unwrap_or(Judged {
            at: self.now(),
            active: 0,
            lost_unseen: 0,
            pods_current: BTreeMap::new(),
        });
        let (cpu_secs, max_rss_mib) = process_usage();
        Outcome {
            tag: self.tag,
            counters: std::mem::take(&mut self.counters),
            latency: std::mem::take(&mut self.latency),
            tally: self.tally,
            connected: self.connected,
            failed: self.failed,
            active_at_end: judged.active,
            lost_unseen: judged.lost_unseen,
            pods_current: judged.pods_current,
            pods_all_opens: self.pods.iter().cloned().zip(self.pod_opens.iter().copied()).collect(),
            elapsed: self.start.elapsed(),
            send_window: Duration::from_micros(self.send_end.min(judged.at)),
            judged_at: Duration::from_micros(judged.at),
            deadline_hit: self.deadline_hit,
            cpu_secs,
            max_rss_mib,
            loop_busy: std::mem::take(&mut self.busy),
            max_events: self.max_events as u64,
        }
    }

    /// Time until something is due, capped.
    fn next_wake(&self, now: u64) -> Duration {
        let mut next = now + us(MAX_SLEEP);
        if let Some(Reverse((t, _))) = self.timers.peek() {
            next = next.min(*t);
        }
        if self.next_ramp < self.clients.len() {
            next = next.min(self.ramp_time(self.next_ramp));
        }
        for t in [self.ramp_us, self.send_end, self.settle_end, self.close_end, self.hard_end, self.status.next] {
            if t > now {
                next = next.min(t);
            }
        }
        Duration::from_micros(next.saturating_sub(now))
    }

    // ----- ramp and timers --------------------------------------------------

    fn ramp_time(&self, i: usize) -> u64 {
        (self.ramp_us as u128 * i as u128 / self.clients.len() as u128) as u64
    }

    fn start_due(&mut self, now: u64) {
        while self.next_ramp < self.clients.len()
            && self.ramp_time(self.next_ramp) <= now
            && self.phase < Phase::Closing
        {
            let i = self.next_ramp;
            self.next_ramp += 1;
            self.connect(i, now);
        }
    }

    fn set_deadline(&mut self, c: usize, t: u64) {
        self.clients[c].deadline = t;
        if t != NO_DEADLINE {
            self.timers.push(Reverse((t, c as u32)));
        }
    }

    fn fire_timers(&mut self, now: u64) {
        while let Some(&Reverse((t, c))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            let c = c as usize;
            if self.clients[c].deadline != t {
                continue; // superseded
            }
            self.clients[c].deadline = NO_DEADLINE;
            match self.clients[c].state {
                State::Connecting => self.fail(c, "connect_timeout", None, now),
                State::Upgrading => self.fail(c, "handshake_timeout", None, now),
                State::Open if !self.clients[c].joined => self.fail(c, "join_timeout", None, now),
                State::Open => self.send_tick(c, t, now),
                State::Closing => {
                    // The server did not end TCP after the close exchange.
                    if self.phase < Phase::Closing {
                        self.counters.error("close_timeout");
                    }
                    self.end(c, None, now);
                }
                State::Backoff if self.phase < Phase::Closing => self.connect(c, now),
                _ => {}
            }
        }
    }

    // ----- connection lifecycle -----------------------------------------------

    fn connect(&mut self, c: usize, now: u64) {
        let a = assign(c, self.cfg);
        if self.clients[c].attempts > 0 {
            self.counters.reconnects += 1;
        }
        self.clients[c].begin_attempt();
        self.counters.attempts += 1;
        let bind = self.cfg.binds.get(a.bind).copied();
        let url = self.clients[c].url(a.url, self.addrs.len());
        let mut stream = match open_socket(self.addrs[url], bind) {
            Ok(s) => s,
            Err(e) => return self.fail(c, io_kind(&e), None, now),
        };
        let key = self.links.vacant_key();
        if let Err(e) = self.poll.registry().register(&mut stream, Token(key), Interest::READABLE | Interest::WRITABLE)
        {
            return self.fail(c, io_kind(&e), None, now);
        }
        let inserted = self.links.insert(Link {
            stream,
            conn: c as u32,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            decoder: Decoder::new(),
            deflate: false,
        });
        debug_assert_eq!(inserted, key);
        self.clients[c].link = Some(key as u32);
        self.clients[c].state = State::Connecting;
        self.set_deadline(c, now + us(self.cfg.connect_timeout));
    }

    fn on_event(&mut self, key: usize, readable: bool, writable: bool, now: u64) {
        let Some(link) = self.links.get(key) else { return };
        let c = link.conn as usize;
        match self.clients[c].state {
            State::Connecting => self.finish_connect(c, key, now),
            State::Upgrading | State::Open | State::Closing => {
                if writable && !self.flush(c, now) {
                    return;
                }
                if readable && self.clients[c].link == Some(key as u32) {
                    self.on_readable(c, now);
                }
            }
            _ => {}
        }
    }

    fn finish_connect(&mut self, c: usize, key: usize, now: u64) {
        let link = &mut self.links[key];
        match link.stream.take_error() {
            Ok(None) => {}
            Ok(Some(e)) | Err(e) => return self.fail(c, io_kind(&e), None, now),
        }
        match link.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return, // not yet
            Err(e) => return self.fail(c, io_kind(&e), None, now),
        }
        let a = assign(c, self.cfg);
        let client = &self.clients[c];
        let key24 = key_for(self.seed, c as u32, client.attempts);
        let name = user_name(self.tag, c as u32);
        let url = client.url(a.url, self.addrs.len());
        link.wbuf.clear();
        let token = self.cfg.token_secret.as_ref().map(|secret| {
            let ttl = self.cfg.token_ttl.as_secs();
            let claims = token::Claims {
                sub: name.clone(),
                ttl_secs: ttl,
                exp: Some(token::expiry(token::unix_now(), ttl, self.judge_unix)),
                ..Default::default()
            };
            token::mint(secret.as_bytes(), &claims)
        });
        let since = client.track.last();
        self.templates[url].write(&mut link.wbuf, &self.room_names[a.room], &name, since, token.as_deref(), &key24);
        self.clients[c].state = State::Upgrading;
        self.set_deadline(c, now + us(self.cfg.connect_timeout));
        self.flush(c, now);
    }

    /// Counts an error of `kind` (unless closing anyway) and ends the connection.
    fn fail(&mut self, c: usize, kind: &str, retry_after: Option<Duration>, now: u64) {
        let during_close = self.phase >= Phase::Closing || self.clients[c].state == State::Closing;
        if !during_close {
            self.counters.error(kind);
        }
        self.end(c, retry_after, now);
    }

    fn drop_link(&mut self, c: usize) {
        if let Some(key) = self.clients[c].link.take() {
            let mut link = self.links.remove(key as usize);
            let _ = self.poll.registry().deregister(&mut link.stream);
        }
    }

    /// Ends the current connection and decides what follows: done (final
    /// phase), a reconnect after a backoff, or giving up. An attempt that
    /// got its join frame succeeded: its end is a disconnect and the
    /// reconnect starts afresh. One that ended before its join (refused,
    /// timeout, non-101, closed) is a failure toward the retry limit.
    fn end(&mut self, c: usize, retry_after: Option<Duration>, now: u64) {
        self.drop_link(c);
        if self.phase >= Phase::Closing {
            self.clients[c].state = State::Done;
            self.clients[c].deadline = NO_DEADLINE;
            return;
        }
        let exponent = if self.clients[c].joined {
            self.counters.disconnects += 1;
            0
        } else {
            let client = &mut self.clients[c];
            client.failures += 1;
            // With several URLs, try the next one (as a client behind a
            // load balancer would reach another pod).
            client.hop = client.hop.wrapping_add(1);
            if client.failures >= self.cfg.max_retries {
                client.state = State::Failed;
                client.deadline = NO_DEADLINE;
                self.failed += 1;
                return;
            }
            client.failures - 1
        };
        self.clients[c].state = State::Backoff;
        let delay = self.backoff.delay(exponent, retry_after, self.rng.unit());
        self.set_deadline(c, now + us(delay));
    }

    fn on_open(&mut self, c: usize, now: u64) {
        self.counters.opens += 1;
        let client = &mut self.clients[c];
        if !client.ever_opened {
            client.ever_opened = true;
            self.connected += 1;
        }
        client.state = State::Open;
        // Sending starts at the join frame, which must come in time.
        self.set_deadline(c, now + us(self.cfg.connect_timeout));
    }

    // ----- I/O ----------------------------------------------------------------

    /// Queues `bytes` and writes what the socket takes. False when the
    /// connection ended on a write error.
    fn send(&mut self, c: usize, bytes: &[u8]) -> bool {
        let Some(key) = self.clients[c].link else { return false };
        self.links[key as usize].wbuf.extend_from_slice(bytes);
        let now = self.now();
        self.flush(c, now)
    }

    /// Writes queued bytes until done or the socket is full.
    fn flush(&mut self, c: usize, now: u64) -> bool {
        let Some(key) = self.clients[c].link else { return false };
        let link = &mut self.links[key as usize];
        let mut written = 0;
        let result = loop {
            if written == link.wbuf.len() {
                break Ok(());
            }
            match link.stream.write(&link.wbuf[written..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        link.wbuf.drain(..written);
        if link.wbuf.is_empty() && link.wbuf.capacity() > KEEP_BUFFER {
            link.wbuf = Vec::new();
        }
        match result {
            Ok(()) => true,
            Err(e) => {
                self.fail(c, io_kind(&e), None, now);
                false
            }
        }
    }

    fn on_readable(&mut self, c: usize, now: u64) {
        let mut scratch = std::mem::take(&mut self.scratch);
        while let Some(key) = self.clients[c].link {
            let key = key as usize;
            let n = match self.links[key].stream.read(&mut scratch) {
                Ok(0) => {
                    self.on_eof(c, now);
                    break;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.fail(c, io_kind(&e), None, now);
                    break;
                }
            };
            let recv_us = unix_micros();
            if self.links[key].rbuf.is_empty() {
                let used = self.process(c, &mut scratch[..n], recv_us, now);
                if used < n && self.clients[c].link == Some(key as u32) {
                    self.links[key].rbuf.extend_from_slice(&scratch[used..n]);
                }
            } else {
                let mut buf = std::mem::take(&mut self.links[key].rbuf);
                buf.extend_from_slice(&scratch[..n]);
                let used = self.process(c, &mut buf, recv_us, now);
                if self.clients[c].link == Some(key as u32) {
                    buf.drain(..used);
                    if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
                        buf = Vec::new();
                    }
                    self.links[key].rbuf = buf;
                }
            }
        }
        self.scratch = scratch;
    }

    fn on_eof(&mut self, c: usize, now: u64) {
        match self.clients[c].state {
            State::Closing => self.end(c, None, now),
            State::Open => self.fail(c, "closed_without_close_frame", None, now),
            State::Upgrading => self.fail(c, "closed_during_upgrade", None, now),
            _ => self.fail(c, "closed", None, now),
        }
    }

    /// Handles the bytes at the front of `buf`: the response head while
    /// upgrading, then frames. Returns how many bytes were used.
    fn process(&mut self, c: usize, buf: &mut [u8], recv_us: u64, now: u64) -> usize {
        let mut off = 0;
        if self.clients[c].state == State::Upgrading {
            let key24 = key_for(self.seed, c as u32, self.clients[c].attempts);
            let verdict = match parse_response(buf) {
                Ok(None) => return 0,
                Ok(Some((n, resp))) => check(&resp, &key24).map(|()| (n, resp.deflate)),
                Err(e) => Err(e),
            };
            match verdict {
                Ok((n, deflate)) => {
                    off = n;
                    if deflate && !self.cfg.deflate {
                        // An extension the client did not offer: fail the connection (RFC 6455 §4.1).
                        self.fail(c, "unrequested_extension", None, now);
                        return buf.len();
                    }
                    if let Some(key) = self.clients[c].link {
                        self.links[key as usize].deflate = deflate;
                    }
                    self.counters.deflate_opens += u64::from(deflate);
                    self.on_open(c, now);
                }
                Err(e) => {
                    let retry_after = match e {
                        HandshakeError::Status(_, Some(s)) => Some(Duration::from_secs(s.min(60))),
                        _ => None,
                    };
                    self.fail(c, &e.label(), retry_after, now);
                    return buf.len();
                }
            }
        }
        let limits = Limits { role: Role::Client, max_message: MAX_MESSAGE };
        // Lent out so a message can borrow the inflated bytes while handled.
        let mut inflater = self.inflater.take();
        while let Some(key) = self.clients[c].link {
            if !matches!(self.clients[c].state, State::Open | State::Closing) {
                break;
            }
            let link = &mut self.links[key as usize];
            let inf = if link.deflate { Some(&mut **inflater.get_or_insert_with(Box::default)) } else { None };
            let rsv1 = buf.get(off).is_some_and(|b| b & 0x40 != 0);
            match link.decoder.decode_with(&mut buf[off..], &limits, inf) {
                Ok(None) => break,
                Ok(Some((n, message))) => {
                    off += n;
                    self.last_frame = (n, rsv1);
                    if let Some(m) = message {
                        self.on_message(c, m, recv_us, now);
                    }
                }
                Err(e) => {
                    self.inflater = inflater;
                    self.protocol_error(c, e, now);
                    return buf.len();
                }
            }
        }
        self.inflater = inflater;
        off
    }

    /// The server broke a framing rule: close with the code it earns, count
    /// it, reconnect.
    fn protocol_error(&mut self, c: usize, e: WsError, now: u64) {
        self.counters.anomaly(&format!("frame_{}", e.metric_label()));
        let frame = frame_with_mask(
            OpCode::Control(Control::Close),
            &close_payload(e.close_code(), &e.to_string()),
            Some(self.rng.mask()),
        );
        self.send(c, &frame);
        if self.clients[c].link.is_some() {
            self.fail(c, "protocol_error", None, now);
        }
    }

    // ----- messages -------------------------------------------------------------

    fn on_message(&mut self, c: usize, m: Message<'_>, recv_us: u64, now: u64) {
        match m {
            Message::Text(p) => self.on_text(c, p.as_text(), recv_us, now),
            Message::Binary(_) => self.counters.anomaly("binary_frame"),
            // After a close was sent nothing more is sent, pongs included.
            Message::Ping(_) if self.clients[c].state != State::Open => {}
            Message::Ping(payload) => {
                let frame = frame_with_mask(OpCode::Control(Control::Pong), payload, Some(self.rng.mask()));
                self.counters.pongs += 1;
                self.send(c, &frame);
            }
            Message::Pong(_) => {}
            Message::Close(code) => {
                let client = &mut self.clients[c];
                client.close_received = true;
                client.draining = true;
                *self.counters.close_codes.entry(code.map_or(0, |(code, _)| code)).or_default() += 1;
                if client.state == State::Open {
                    // Answer with a close (echoing the code) and wait for the server to end TCP.
                    let payload = code.map_or(Vec::new(), |(code, _)| close_payload(code, ""));
                    let frame = frame_with_mask(OpCode::Control(Control::Close), &payload, Some(self.rng.mask()));
                    self.clients[c].state = State::Closing;
                    self.set_deadline(c, now + us(CLOSE_WAIT));
                    self.send(c, &frame);
                }
            }
        }
    }

    fn on_text(&mut self, c: usize, text: &str, recv_us: u64, now: u64) {
        if self.judged.is_some() {
            return; // already judged: the closing handshake only
        }
        let frame = match protocol::parse(text) {
            Ok(f) => f,
            Err(_) => return self.counters.anomaly("bad_json"),
        };
        match frame.kind.as_ref() {
            "system" => match frame.last_seq {
                Some(last_seq) => self.on_join(c, &frame, last_seq, now),
                None => {
                    if frame.message.as_deref().is_some_and(is_shutdown_notice) {
                        self.counters.shutdown_notices += 1;
                        self.clients[c].draining = true;
                    }
                }
            },
            "chat" => self.on_chat(c, &frame, recv_us),
            "error" => {
                self.clients[c].rejected += 1;
                let code = frame.code.as_deref().unwrap_or("unknown");
                *self.counters.rejected_by_code.entry(code.to_string()).or_default() += 1;
            }
            _ => self.counters.anomaly("unknown_type"),
        }
    }

    /// Marks a message of this run as seen by someone.
    fn saw_marker(&mut self, text: &str) -> Option<Marker> {
        let m = Marker::parse(text)?;
        if m.tag == self.tag {
            if let Some(sender) = self.clients.get_mut(m.conn as usize) {
                sender.outbox.seen(m.n);
            }
        }
        Some(m)
    }

    fn on_join(&mut self, c: usize, f: &protocol::Incoming<'_>, last_seq: u64, now: u64) {
        let a = assign(c, self.cfg);
        if self.clients[c].joined {
            return self.counters.anomaly("second_join");
        }
        if f.room.as_deref().is_some_and(|r| r != self.room_names[a.room]) {
            self.counters.anomaly("wrong_room");
        }
        // Pod distribution.
        let pod = f.pod.as_deref().unwrap_or("?");
        let idx = match self.pod_index.get(pod) {
            Some(&i) => i,
            None => {
                let i = self.pods.len().min(u16::MAX as usize - 1) as u16;
                if (i as usize) == self.pods.len() {
                    self.pods.push(pod.to_string());
                    self.pod_opens.push(0);
                }
                self.pod_index.insert(pod.to_string(), i);
                i
            }
        };
        self.pod_opens[idx as usize] += 1;
        self.clients[c].pod = idx;

        let mut history = std::mem::take(&mut self.history);
        history.clear();
        for h in f.history.iter().flatten() {
            self.counters.received_history += 1;
            match h.seq {
                Some(s) => history.push(s),
                None => self.tally.history_anomalies += 1,
            }
            if h.room.as_deref().is_some_and(|r| r != self.room_names[a.room]) {
                self.counters.anomaly("wrong_room");
            }
            self.saw_marker(&h.message);
        }
        let client = &mut self.clients[c];
        client.failures = 0;
        let join = Join { last_seq, history: &history, recovered: f.recovered };
        if client.track.join(join, &mut self.tally) {
            // The room's sequence restarted: follow (or start) its new epoch.
            client.track.epoch = self.rooms.restart(a.room, client.track.epoch, last_seq);
        }
        client.joined = true;
        let epoch = client.track.epoch;
        for &s in history.iter().chain([&last_seq]) {
            self.rooms.observe(a.room, s, epoch);
        }
        self.history = history;
        if a.sender && now < self.send_end && !self.clients[c].draining {
            let phase = self.rng.below(self.interval_us);
            self.set_deadline(c, now + phase);
        } else {
            self.clients[c].deadline = NO_DEADLINE; // the join timeout is met
        }
    }

    fn on_chat(&mut self, c: usize, f: &protocol::Incoming<'_>, recv_us: u64) {
        let a = assign(c, self.cfg);
        let Some(seq) = f.seq else { return self.counters.anomaly("chat_without_seq") };
        if f.room.as_deref().is_some_and(|r| r != self.room_names[a.room]) {
            return self.counters.anomaly("wrong_room");
        }
        self.counters.received_live += 1;
        self.counters.chat_wire_bytes += self.last_frame.0 as u64;
        self.counters.chat_compressed += u64::from(self.last_frame.1);
        self.clients[c].track.observe(seq, &mut self.tally);
        self.rooms.observe(a.room, seq, self.clients[c].track.epoch);
        if let Some(m) = f.message.as_deref().and_then(|text| self.saw_marker(text)) {
            let latency = recv_us.saturating_sub(m.sent_us);
            self.latency.record(latency);
            self.status.latency.record(latency);
        }
    }

    fn send_tick(&mut self, c: usize, due: u64, now: u64) {
        let client = &self.clients[c];
        if now >= self.send_end || client.draining || !client.joined {
            return;
        }
        let n = self.clients[c].outbox.next();
        let marker = Marker { tag: self.tag, conn: c as u32, n, sent_us: unix_micros() };
        chat_json(&mut self.text, &marker, self.cfg.payload);
        let deflate = self.clients[c].link.is_some_and(|k| self.links[k as usize].deflate);
        let frame = if deflate {
            compressed_frame(OpCode::Data(Data::Text), self.text.as_bytes(), Some(self.rng.mask()))
        } else {
            frame_with_mask(OpCode::Data(Data::Text), self.text.as_bytes(), Some(self.rng.mask()))
        };
        self.counters.sent += 1;
        if self.send(c, &frame) && self.clients[c].state == State::Open {
            // Keep the grid; after a stall, skip ahead rather than burst.
            let mut next = due + self.interval_us;
            if next <= now {
                next = now + self.interval_us;
            }
            self.set_deadline(c, next);
        }
    }

    // ----- progress ---------------------------------------------------------------

    fn print_status(&mut self, now: u64) {
        let final_line = now == u64::MAX;
        if self.cfg.quiet || (!final_line && now < self.status.next) {
            return;
        }
        let now = if final_line { self.now() } else { now };
        while self.status.next <= now {
            self.status.next += us(self.cfg.status_every);
        }
        let (cpu, _) = process_usage();
        let dt = (now - self.status.last_t) as f64 / 1e6;
        let received = self.counters.received_live;
        let status = Status {
            t: now as f64 / 1e6,
            phase: self.phase.name(),
            connected: self.connected,
            active: self.clients.iter().filter(|c| c.active()).count() as u64,
            target: self.clients.len() as u64,
            reconnects: self.counters.reconnects,
            errors: self.counters.errors,
            sent: self.counters.sent,
            received,
            rate: if dt > 0.0 { (received - self.status.last_received) as f64 / dt } else { 0.0 },
            p99_ms: self.status.latency.percentile(99.0) as f64 / 1000.0,
            cpu_percent: if dt > 0.0 { 100.0 * (cpu - self.status.last_cpu) / dt } else { 0.0 },
        };
        self.status.last_t = now;
        self.status.last_received = received;
        self.status.last_cpu = cpu;
        self.status.latency.clear();
        let mut err = io::stderr().lock();
        let _ = if self.status.terminal {
            write!(err, "\r{}\x1b[K", status.line())
        } else {
            writeln!(err, "{}", status.line())
        };
        let _ = err.flush();
        self.status.printed = true;
    }
}
