//! The subscriber thread: room-scoped Redis subscriptions → history → workers.
//!
//! A pod listens only to the rooms it has members in. Workers report each
//! chat connection's room when it starts joining and when it is removed
//! ([`Interest`], through the channel server.rs gives them); the
//! subscriber counts them per room and:
//! - on the first one, sends `SSUBSCRIBE chat:{ROOM}:ch` on the connection
//!   to the node owning the room's slot (one connection per master node,
//!   all polled by one `mio::Poll`);
//! - when Redis confirms the subscription, reads the room's counter and,
//!   as soon as this pod knows the room's last seq (at once, or when the
//!   history loader has warmed it for the joining client), fills what lies
//!   between from the room's Redis list. Nothing published between
//!   "subscribed" and "delivering" is lost; the seq checks below skip what
//!   arrives twice. A counter below the pod's floor (Redis lost writes) is
//!   raised to it first. Only then is the room *live*: the publisher
//!   publishes into live rooms only;
//! - `ROOM_LINGER_SECS` after the last member left, sends `SUNSUBSCRIBE`; once
//!   confirmed, the room is forgotten by this pod's history (not known, not
//!   complete: the next join loads it again). Rooms loaded without a
//!   subscription (a `/history` request) are forgotten by a periodic sweep,
//!   so a stale ring is never taken for a complete one.
//!
//! For each message received (the origin pod too: every pod delivers in
//! the one order Redis gave):
//! - a seq at or below the room's last one here is a duplicate (already
//!   delivered by a fill) and is skipped;
//! - the next seq is stored in history, framed once and fanned out;
//! - a seq further ahead means messages were missed: they are fetched from
//!   the room's Redis list and delivered first, in order. If the list no
//!   longer has them, the room's clients here are closed with 1012 and
//!   resume with `since` (the history loader then reads MongoDB).
//!
//! A lost connection, a failover or a slot that moved (Redis pushes
//! `sunsubscribe`) makes the affected rooms subscribe again — on the node
//! the refreshed topology names — and catch up the same way.
//!
//! The message path (payload → history → fan-out, gap fills) is in
//! `delivery`; the catch-up after a subscription (counter, floor raise,
//! fill, live) in `catch_up`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Events, Interest as Ready, Poll, Token};

use super::echo::Echoes;
use super::pool::NodePool;
use super::resp::{Resp, SubConn};
use super::topology::{room_slot, Node, Topology};
use super::{channel, node_failed, room_of_channel, LiveRooms};
use crate::backoff::Backoff;
use crate::channels::{Interest, Workers};
use crate::chat::history::History;
use crate::health::one_line;
use crate::metrics::Metrics;

mod catch_up;
mod delivery;

/// Longest the loop sleeps in `poll` (shutdown, interest, timers).
const POLL: Duration = Duration::from_millis(5);
/// How often rooms loaded without a subscription are forgotten.
const SWEEP: Duration = Duration::from_secs(5);
/// Connect timeout to a node: short, since the loop (every room's
/// deliveries) waits for it; a node that is gone is retried soon.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// What the subscriber is started with, besides its channels.
#[derive(Debug)]
pub struct SubscriberHandles {
    /// Where it appends what it receives.
    pub history: Arc<History>,
    /// Its counters (`metrics.backend`).
    pub metrics: Arc<Metrics>,
    /// The fan-out, and room resyncs.
    pub workers: Workers,
    /// `ROOM_LINGER_SECS`.
    pub room_linger: Duration,
    /// This pod's answered messages, stored when delivered here.
    pub echoes: Arc<Echoes>,
}

/// Starts the subscriber; it exits when `stop` is set.
pub fn spawn(
    state: SubscriberHandles,
    topo: Arc<Topology>,
    live: Arc<LiveRooms>,
    interest: Receiver<Interest>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    let poll = Poll::new()?;
    let mut sub = Subscriber {
        pool: NodePool::new(topo.clone()),
        topo,
        live,
        state,
        interest,
        stop,
        poll,
        conns: HashMap::new(),
        next_token: 0,
        rooms: HashMap::new(),
        down: HashMap::new(),
        connected_before: HashSet::new(),
        last_sweep: Instant::now(),
        last_warning: None,
        topo_version: 0,
    };
    std::thread::Builder::new().name("redis-subscriber".into()).spawn(move || sub.run())
}

/// Where a room's subscription stands.
#[derive(Debug, Default)]
struct RoomSub {
    /// Local connections in (or joining) the room.
    refs: u32,
    /// The node `SSUBSCRIBE` was sent to; `None`: to be sent.
    node: Option<Node>,
    /// Redis confirmed the subscription.
    active: bool,
    /// `SUNSUBSCRIBE` was sent.
    leaving: bool,
    /// When `refs` fell to 0.
    idle_since: Option<Instant>,
    /// The room's counter when the subscription was confirmed: fill up to
    /// it once the room's last seq is known here. `Some(None)`: read it.
    catch_up: Option<Option<u64>>,
}

struct NodeConn {
    conn: SubConn,
    token: Token,
}

struct Subscriber {
    state: SubscriberHandles,
    topo: Arc<Topology>,
    /// The rooms subscribed here, for the publisher.
    live: Arc<LiveRooms>,
    pool: NodePool,
    interest: Receiver<Interest>,
    stop: Arc<AtomicBool>,
    poll: Poll,
    conns: HashMap<Node, NodeConn>,
    next_token: usize,
    rooms: HashMap<Arc<str>, RoomSub>,
    /// Nodes whose connection failed, each with its own reconnect pacing
    /// (the other nodes' rooms are not held back by one that is down).
    down: HashMap<Node, Backoff>,
    /// Nodes connected to at least once (a new connection to one of them is a reconnection).
    connected_before: HashSet<Node>,
    last_sweep: Instant,
    last_warning: Option<Instant>,
    /// The slot map version the subscriptions follow.
    topo_version: u64,
}

impl Subscriber {
    fn run(&mut self) {
        let mut events = Events::with_capacity(64);
        let mut values = Vec::new();
        while !self.stop.load(Ordering::Acquire) {
            self.take_interest();
            self.connect_masters();
            self.subscribe_wanted();
            self.flush_all();
            if let Err(e) = self.poll.poll(&mut events, Some(POLL)) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    log::error!("redis-subscriber poll failed: {e}");
                    std::thread::sleep(POLL);
                }
                continue;
            }
            for ev in events.iter() {
                let Some(node) = self.conns.iter().find(|(_, c)| c.token == ev.token()).map(|(n, _)| n.clone()) else {
                    continue;
                };
                values.clear();
                let read = self.conns.get_mut(&node).map(|c| c.conn.read(&mut values));
                for v in values.drain(..) {
                    if let Err(e) = self.on_value(&node, v) {
                        self.command_failed(&e);
                        break;
                    }
                }
                if let Some(Err(e)) = read {
                    self.node_failed(&node, &e.to_string());
                }
            }
            self.follow_owners();
            self.catch_up_rooms();
            self.linger();
            if self.last_sweep.elapsed() >= SWEEP {
                self.sweep();
            }
        }
        log::debug!("redis-subscriber stopped");
    }

    fn take_interest(&mut self) {
        while let Ok(i) = self.interest.try_recv() {
            match i {
                Interest::Join(room) => {
                    let r = self.rooms.entry(room).or_default();
                    r.refs += 1;
                    r.idle_since = None;
                }
                Interest::Leave(room) => {
                    if let Some(r) = self.rooms.get_mut(&room) {
                        r.refs = r.refs.saturating_sub(1);
                        if r.refs == 0 {
                            r.idle_since = Some(Instant::now());
                        }
                    }
                }
            }
        }
        self.state.metrics.backend.redis_subscribed_rooms.store(self.rooms.len() as i64, Relaxed);
    }

    /// Keeps a connection to every master (so `redis_connected` is true
    /// even with no room subscribed); reconnects each with its backoff.
    /// While one is missing, the slot map is read again (rate-limited by
    /// the topology), so a promoted replica is subscribed to as soon as
    /// the cluster names it.
    fn connect_masters(&mut self) {
        let mut masters = self.topo.masters();
        if masters.iter().any(|n| !self.conns.contains_key(n)) && self.topo.refresh() {
            masters = self.topo.masters();
        }
        self.down.retain(|n, _| masters.contains(n));
        let missing: Vec<Node> = masters
            .into_iter()
            .filter(|n| !self.conns.contains_key(n) && self.down.get(n).is_none_or(Backoff::ready))
            .collect();
        if missing.is_empty() {
            return;
        }
        for node in missing {
            match SubConn::connect(&node, self.topo.auth(), CONNECT_TIMEOUT) {
                Ok(mut conn) => {
                    let token = Token(self.next_token);
                    self.next_token += 1;
                    if let Err(e) =
                        self.poll.registry().register(&mut conn.stream, token, Ready::READABLE | Ready::WRITABLE)
                    {
                        self.node_failed(&node, &e.to_string());
                        continue;
                    }
                    self.conns.insert(node.clone(), NodeConn { conn, token });
                    self.down.remove(&node);
                    let m = &self.state.metrics.backend;
                    if !self.connected_before.insert(node.clone()) {
                        m.redis_reconnects.fetch_add(1, Relaxed);
                        log::info!("Redis subscription restored on {node}; resubscribing and catching up rooms");
                    } else {
                        log::info!("Redis subscription connection to {node} established");
                    }
                }
                Err(e) => {
                    // The others are still tried: one dead master (until its
                    // failover) must not keep this pod off the live ones.
                    self.node_failed(&node, &e.to_string());
                }
            }
        }
        if self.topo.masters().iter().all(|n| self.conns.contains_key(n)) {
            self.state.metrics.backend.redis_subscriber_up.store(1, Relaxed);
        }
    }

    /// Sends `SSUBSCRIBE` for rooms with members that are not subscribed.
    fn subscribe_wanted(&mut self) {
        let wanted: Vec<Arc<str>> =
            self.rooms.iter().filter(|(_, r)| r.refs > 0 && r.node.is_none()).map(|(k, _)| k.clone()).collect();
        for room in wanted {
            let node = self.topo.node_of(room_slot(&room));
            let Some(c) = self.conns.get_mut(&node) else { continue };
            c.conn.send(&[b"SSUBSCRIBE", channel(&room).as_bytes()]);
            if let Some(r) = self.rooms.get_mut(&room) {
                r.node = Some(node);
                r.leaving = false;
            }
        }
    }

    fn flush_all(&mut self) {
        let mut failed = Vec::new();
        for (node, c) in self.conns.iter_mut() {
            if let Err(e) = c.conn.flush() {
                failed.push((node.clone(), e.to_string()));
            }
        }
        for (node, e) in failed {
            self.node_failed(&node, &e);
        }
    }

    /// The connection to `node` failed: its rooms subscribe again (on the
    /// node the refreshed topology names) and catch up.
    fn node_failed(&mut self, node: &Node, why: &str) {
        if let Some(mut c) = self.conns.remove(node) {
            let _ = self.poll.registry().deregister(&mut c.conn.stream);
        }
        for (room, r) in self.rooms.iter_mut().filter(|(_, r)| r.node.as_ref() == Some(node)) {
            r.node = None;
            r.active = false;
            r.leaving = false;
            self.live.set(room, false);
        }
        let (wait, first) = node_failed(&mut self.down, node);
        if first {
            log::warn!("Redis subscription to {node} lost ({why}); resubscribing with backoff (next in {wait:?})");
        }
        self.topo.refresh();
    }

    /// A catch-up or fill failed; it is retried on the next loop (the
    /// warning at most every `SWEEP`, so an outage does not flood the log).
    fn command_failed(&mut self, e: &redis::RedisError) {
        self.state.metrics.backend.redis_errors.fetch_add(1, Relaxed);
        if self.last_warning.is_none_or(|t| t.elapsed() >= SWEEP) {
            self.last_warning = Some(Instant::now());
            log::warn!("Redis command of the subscriber failed ({}); retrying", one_line(e));
        }
    }

    fn on_value(&mut self, node: &Node, v: Resp) -> redis::RedisResult<()> {
        let items = match v {
            Resp::Array(Some(items)) => items,
            Resp::Error(e) => {
                self.on_error(node, &e);
                return Ok(());
            }
            other => {
                log::debug!("unexpected value on the subscription to {node}: {other:?}");
                return Ok(());
            }
        };
        let kind = items.first().and_then(Resp::bytes).unwrap_or_default();
        let Some(room) = items.get(1).and_then(Resp::bytes).and_then(room_of_channel) else { return Ok(()) };
        match kind {
            b"smessage" => {
                let payload = items.get(2).and_then(Resp::bytes).unwrap_or_default();
                self.on_payload(&room, payload)
            }
            b"ssubscribe" => {
                // A confirmation from a node the room has moved away from meanwhile is stale.
                if let Some(r) = self.rooms.get_mut(&*room).filter(|r| r.node.as_ref() == Some(node)) {
                    r.active = true;
                    r.catch_up = Some(None);
                }
                Ok(())
            }
            b"sunsubscribe" => {
                if self.rooms.get(&*room).is_some_and(|r| r.node.as_ref() == Some(node)) {
                    self.on_unsubscribed(&room);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// `SSUBSCRIBE` refused: `MOVED` (the slot is elsewhere now) or a
    /// cluster that is down; the rooms waiting for a confirmation on this
    /// node try again after a topology refresh.
    fn on_error(&mut self, node: &Node, e: &str) {
        self.state.metrics.backend.redis_errors.fetch_add(1, Relaxed);
        log::info!("Redis answered a subscription on {node} with {e:?}; refreshing the topology and resubscribing");
        for r in self.rooms.values_mut().filter(|r| r.node.as_ref() == Some(node) && !r.active) {
            r.node = None;
        }
        self.topo.refresh();
    }

    /// Redis confirmed an unsubscription: ours (the room lingered long
    /// enough), or its own (the slot moved to another node).
    fn on_unsubscribed(&mut self, room: &Arc<str>) {
        let Some(r) = self.rooms.get_mut(room) else { return };
        r.active = false;
        r.node = None;
        self.live.set(room, false);
        if r.leaving && r.refs == 0 {
            self.rooms.remove(room);
            self.state.history.forget(room);
            return;
        }
        if !r.leaving {
            log::info!("room {room}: Redis ended its subscription (slot moved); resubscribing");
            self.topo.refresh();
        }
        r.leaving = false;
    }

    /// After the slot map changed, moves each subscription whose slot has
    /// another owner now (a failover or a migration the old node did not
    /// announce with `sunsubscribe`, or a resubscription sent on a stale
    /// map): unsubscribe there, subscribe on the owner, catch up.
    fn follow_owners(&mut self) {
        let version = self.topo.version();
        if version == self.topo_version {
            return;
        }
        self.topo_version = version;
        for (room, r) in self.rooms.iter_mut() {
            let Some(node) = r.node.clone() else { continue };
            if r.leaving || self.topo.node_of(room_slot(room)) == node {
                continue;
            }
            if let Some(c) = self.conns.get_mut(&node) {
                c.conn.send(&[b"SUNSUBSCRIBE", channel(room).as_bytes()]);
            }
            log::info!("room {room}: its slot moved off {node}; subscribing on the new owner");
            r.node = None;
            r.active = false;
            self.live.set(room, false);
        }
    }

    /// Unsubscribes rooms whose last member left `ROOM_LINGER_SECS` ago.
    fn linger(&mut self) {
        let now = Instant::now();
        let linger = self.state.room_linger;
        for (room, r) in self.rooms.iter_mut() {
            if r.refs == 0 && r.active && !r.leaving && r.idle_since.is_some_and(|t| now.duration_since(t) >= linger) {
                if let Some(c) = r.node.as_ref().and_then(|n| self.conns.get_mut(n)) {
                    c.conn.send(&[b"SUNSUBSCRIBE", channel(room).as_bytes()]);
                    r.leaving = true;
                }
            }
        }
        // A room that never got its subscription and has no member left.
        self.rooms.retain(|_, r| r.refs > 0 || r.node.is_some());
    }

    /// Forgets rooms this pod's history holds without a subscription.
    /// Interest is read between listing and forgetting: a join reports its
    /// room before asking the loader, so a room loaded for a join is never
    /// swept.
    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        // A cluster's map is also read now and then, in case a change
        // reached this pod through no error (see `follow_owners`).
        self.topo.refresh();
        let held = self.state.history.known_rooms();
        self.take_interest();
        for (room, _) in held {
            if !self.rooms.contains_key(&room) {
                self.state.history.forget(&room);
            }
        }
    }
}
