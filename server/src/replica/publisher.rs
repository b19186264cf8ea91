//! The publisher thread: workers' validated messages → Redis.
//!
//! Each message gets its id here, once, and keeps it across retries; a
//! message sent again after a lost reply is flagged *in doubt*, and the
//! publish script looks its id up in the tail of the room's list before
//! numbering it, so nothing is published twice. Messages that pile up go
//! out together, up to `PIPELINE_MAX` per round trip: one script call per
//! node, standalone or cluster alike, carrying every message of the rooms
//! that node owns in the batch (see [`PUBLISH_SCRIPT`]).
//!
//! Routing follows the [`Topology`]: a call goes to the node owning its
//! rooms' slots, and Redis routes it by its first room. `MOVED` refreshes
//! the slot map and sends the call again (nothing ran); `ASK` sends that
//! room's slot once to the importing node after `ASKING`; `TRYAGAIN` (a
//! slot mid-migration) or `CLUSTERDOWN` (a slot without a master,
//! mid-failover) waits a moment and reads the slot map again. A room of
//! another slot in the call that is no longer the node's ends the script
//! before that room (a shorter answer, nothing of it written): the rest of
//! the call is sent again, one call per slot, after the slot map is read
//! again.
//!
//! Health is per node. When a node's connection fails, only the messages
//! of its slots wait — the other nodes' rooms are published as usual — and
//! the slot map is read again at once and then every `REFRESH_MIN` while
//! the node is down, so the promoted replica is used as soon as the
//! cluster names it; the dead node itself is retried with its own backoff
//! (a standalone Redis that restarts). A message waits at most the *hold*
//! (`REDIS_FAILOVER_HOLD_MS`; by default [`Topology::hold`]: 3 s for one
//! Redis, what a failover takes for a cluster) and is published when its
//! node answers; what waits longer is refused with an `unavailable` error
//! frame to its sender. What is held is bounded (`HELD_MAX` messages,
//! `HELD_BYTES_MAX` bytes, both in `/metrics`): past that a new message is
//! refused at once. Nothing is dropped silently.
//!
//! A message whose script call went out but whose reply was lost is *in
//! doubt*: Redis may have run it. Within the hold it is simply sent again
//! (the script answers a retry with the first seq). Past the hold its sender
//! is refused like the others — almost always truthfully: Redis went away
//! before it ran — but the message is kept as *unresolved* and, once Redis
//! answers again, the room's list is searched for its id: if the script had run after
//! all, the message was delivered, and it is written to MongoDB as its
//! origin pod must (counted, and logged as a warning: its sender was told
//! `unavailable`; a resend with the same `clientId` is deduplicated).
//!
//! A message Redis answered goes to [`Echoes`]: its origin pod (this one)
//! stores it when it comes back through the subscription, and publishes it
//! again, first and in doubt, if Redis lost it before delivering it
//! ([`super::echo`]).
//!
//! Code: the batch and its routing here; a call's arguments and what its
//! answer means for each message in `call`; each node's connection and
//! health in `nodes`; what is held, refused and unresolved in `held`.
//!
//! [`PUBLISH_SCRIPT`]: super::PUBLISH_SCRIPT
//! [`Topology`]: super::topology::Topology
//! [`Topology::hold`]: super::topology::Topology::hold
//!
//! A message for a room this pod is not subscribed to yet (its sender just
//! joined: the subscription is being confirmed) waits for it, up to the hold:
//! published earlier, the pod's own first messages could precede its
//! subscription by more than the Redis list keeps.
//!
//! A message for a room whose latest seq this pod does not know yet (a
//! cold room, see [`History`](crate::chat::history::History)) is refused
//! the same way, and the room is loaded: numbering it blind could restart
//! its sequence if Redis lost its data.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::echo::Echoes;
use super::pool::NodePool;
use super::topology::{room_slot, Node, Topology};
use super::{LiveRooms, PUBLISH_SCRIPT};
use crate::backoff::Backoff;
use crate::channels::{HubCommand, Origin, Publish, SequencerHandles};
use crate::chat::protocol::ChatMessage;
use crate::hub::IdGen;

mod call;
mod held;
mod nodes;

use call::{Group, Outcome};
use held::refuse;

/// Messages sent to Redis in one round trip at most.
const PIPELINE_MAX: usize = 256;
/// Messages held for Redis, at most; past it (or `HELD_BYTES_MAX`) a new
/// message is refused at once.
const HELD_MAX: usize = 16_384;
/// Bytes of held messages (their text, names and ids), at most.
const HELD_BYTES_MAX: usize = 64 << 20;
/// What a held message costs besides its strings (struct, id, queue slot).
const HELD_OVERHEAD: usize = 160;
/// The hold once shutdown has begun: the pod's shutdown budget counts it
/// (server.rs, and the manifests' grace period through
/// tools/k8s-checks), so a longer failover hold does not stretch it.
pub const HOLD: Duration = Duration::from_secs(3);
/// Redis socket timeouts.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Connect timeout: short, since the publisher thread waits for it while
/// the other nodes' messages queue (a node that is gone is retried soon).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// An idle connection is checked this often.
const IDLE_PING: Duration = Duration::from_secs(1);
/// Unresolved messages kept at most (they are looked up in the room's list).
const UNRESOLVED_MAX: usize = 16_384;
/// How often answered messages are checked for ones Redis lost.
const ECHO_CHECK: Duration = Duration::from_millis(50);
/// Pause before sending again a group Redis redirected or asked to retry.
const REDIRECT_PAUSE: Duration = Duration::from_millis(20);

/// A message waiting to be published.
struct Held {
    msg: ChatMessage,
    origin: Origin,
    since: Instant,
    /// What it counts against `HELD_BYTES_MAX`.
    bytes: usize,
    /// Its script call was sent at least once without an answer: Redis may
    /// have published it.
    in_doubt: bool,
    /// Redis answered `ASK`: send it to this node, after `ASKING`, once.
    ask: Option<Node>,
    /// Its room's [`LiveRooms`] generation when it went into a batch.
    generation: u64,
    /// Its room's slot was not where the slot map said, in a call of
    /// several slots: it goes in a call of its slot alone, where Redis
    /// itself routes and redirects it.
    alone: bool,
}

impl Held {
    fn new(msg: ChatMessage, origin: Origin, bytes: usize, in_doubt: bool) -> Held {
        Held { msg, origin, since: Instant::now(), bytes, in_doubt, ask: None, alone: false, generation: 0 }
    }
}

/// What a held message counts against `HELD_BYTES_MAX`.
fn held_bytes(m: &ChatMessage) -> usize {
    HELD_OVERHEAD
        + m.room.len()
        + m.username.len()
        + m.message.len()
        + m.client_id.as_ref().map_or(0, String::len)
        + m.user_id.as_ref().map_or(0, String::len)
}

/// Starts the publisher; it exits after [`HubCommand::Stop`] once what it
/// holds is published or refused. A message waits at most `hold` for the
/// node of its room ([`Topology::hold`] unless configured).
pub fn spawn(
    hold: Duration,
    state: SequencerHandles,
    rx: Receiver<HubCommand>,
    topo: Arc<Topology>,
    live: Arc<LiveRooms>,
    echoes: Arc<Echoes>,
) -> std::io::Result<JoinHandle<()>> {
    let publisher = Publisher {
        state,
        rx,
        pool: NodePool::new(topo.clone()),
        topo,
        live,
        echoes,
        last_echo_check: Instant::now(),
        cons: HashMap::new(),
        down: HashMap::new(),
        hold,
        sha: redis::Script::new(PUBLISH_SCRIPT).get_hash().to_string(),
        ids: IdGen::new(),
        held: VecDeque::new(),
        held_bytes: 0,
        unresolved: VecDeque::new(),
        stopping: false,
        ever_connected: false,
    };
    std::thread::Builder::new().name("redis-publisher".into()).spawn(move || publisher.run())
}

struct Publisher {
    /// Also the ways to the MongoDB writer (`store`) and the loader.
    state: SequencerHandles,
    rx: Receiver<HubCommand>,
    topo: Arc<Topology>,
    /// Rooms this pod's subscriber listens to: the only ones it publishes into.
    live: Arc<LiveRooms>,
    /// Its answered messages until they come back (see [`Echoes`]).
    echoes: Arc<Echoes>,
    /// When `echoes` was last asked for messages to publish again.
    last_echo_check: Instant,
    /// For reading lists when resolving messages in doubt.
    pool: NodePool,
    /// One connection per master, the script loaded on each.
    cons: HashMap<Node, redis::Connection>,
    /// Nodes whose connection failed, each with its own reconnect pacing:
    /// only the messages of their slots wait; the other nodes' go on.
    down: HashMap<Node, Backoff>,
    /// How long a message may wait for its node.
    hold: Duration,
    /// SHA1 of the publish script.
    sha: String,
    ids: IdGen,
    held: VecDeque<Held>,
    /// Sum of the held messages' `bytes`.
    held_bytes: usize,
    /// Refused after the hold while in doubt: resolved from their rooms'
    /// lists once Redis answers (see the module doc).
    unresolved: VecDeque<(ChatMessage, Instant)>,
    stopping: bool,
    ever_connected: bool,
}

impl Publisher {
    fn run(mut self) {
        self.connect_masters();
        loop {
            self.take_commands();
            if self.stopping && self.held.is_empty() {
                break;
            }
            if !self.down.is_empty() {
                self.follow_failover();
            }
            self.publish_lost();
            if !self.held.is_empty() {
                self.publish_batch();
            }
            self.report_held();
        }
        // What did not come back yet is stored as Redis answered it.
        self.echoes.flush();
        log::debug!("redis-publisher stopped");
    }

    /// Takes what is queued; when nothing is held, waits for the first
    /// command — a moment if a node is down (so it is tried again and the
    /// topology followed), else until the next idle ping (so the connection
    /// state stays true).
    fn take_commands(&mut self) {
        if self.held.is_empty() && !self.stopping {
            let wait = if self.down.is_empty() { IDLE_PING } else { Duration::from_millis(100) };
            match self.rx.recv_timeout(wait) {
                Ok(cmd) => self.take(cmd),
                Err(RecvTimeoutError::Timeout) => {
                    self.ping_if_idle();
                    self.connect_masters();
                }
                Err(RecvTimeoutError::Disconnected) => self.stopping = true,
            }
        }
        // Everything queued is taken (beyond the hold's bounds, refused at
        // once): the workers' channel never backs up behind a dead node.
        while !self.stopping {
            match self.rx.try_recv() {
                Ok(cmd) => self.take(cmd),
                Err(_) => break,
            }
        }
    }

    fn take(&mut self, cmd: HubCommand) {
        match cmd {
            HubCommand::Stop => self.stopping = true,
            HubCommand::Publish(p) => {
                let Publish { room, username, message, timestamp_ms, client_id, user_id, origin } = p;
                let msg = ChatMessage {
                    room: room.to_string(),
                    seq: 0,
                    id: self.ids.next_id(),
                    username,
                    message,
                    pod_name: self.state.pod_name.clone(),
                    timestamp_ms,
                    client_id,
                    user_id,
                };
                let bytes = held_bytes(&msg);
                if self.held.len() >= HELD_MAX || self.held_bytes + bytes > HELD_BYTES_MAX {
                    self.state.metrics.backend.redis_held_overflow.fetch_add(1, Relaxed);
                    refuse(
                        &self.state,
                        &origin,
                        "too many messages are waiting for Redis on this server; message not sent, retry later",
                    );
                    return;
                }
                self.held_bytes += bytes;
                self.held.push_back(Held::new(msg, origin, bytes, false));
            }
        }
    }

    /// Every `ECHO_CHECK`: publishes again, first and in doubt, the
    /// messages Redis answered that did not come back through the room's
    /// subscription before it was subscribed again (see [`Echoes`]).
    fn publish_lost(&mut self) {
        if self.last_echo_check.elapsed() < ECHO_CHECK {
            return;
        }
        self.last_echo_check = Instant::now();
        let lost = self.echoes.take_lost(&self.live);
        let m = &self.state.metrics.backend;
        for a in lost.into_iter().rev() {
            m.redis_republished.fetch_add(1, Relaxed);
            log::warn!(
                "message {} of room {} was given seq {} but never came back through the subscription \
                 (Redis lost it before delivering it): publishing it again",
                a.msg.id,
                a.msg.room,
                a.msg.seq
            );
            let msg = ChatMessage { seq: 0, ..a.msg };
            let bytes = held_bytes(&msg);
            self.held_bytes += bytes;
            self.held.push_front(Held::new(msg, a.origin, bytes, true));
        }
    }

    /// Takes up to `PIPELINE_MAX` held messages and publishes them: one
    /// pipeline per node, one script call per group.
    fn publish_batch(&mut self) {
        self.refuse_expired();
        let mut batch: Vec<Held> = Vec::new();
        let mut waiting: Vec<Held> = Vec::new();
        // Calls: (node, slot if asking or alone, asking) → rooms in first-seen order.
        let mut groups: Vec<Group> = Vec::new();
        let mut index: HashMap<(Node, Option<u16>, bool), usize> = HashMap::new();
        // A room's messages are published in the order sent, so they all go
        // in one call: per room of the batch, its call, or `None` once one of
        // its messages waits — the later ones then wait behind it. (The slot
        // map and the subscriptions change under the selection: without this
        // a room's later message could go out before an earlier one waiting
        // for its node, or in another call of the same pipeline.)
        // The place is (call, the room's index in the call's rooms).
        let mut room_call: HashMap<Arc<str>, Option<(usize, usize)>> = HashMap::new();
        while batch.len() < PIPELINE_MAX {
            let Some(mut h) = self.held.pop_front() else { break };
            let seen = room_call.get(h.msg.room.as_str()).copied();
            // Not subscribed here yet (just joined, or resubscribing after
            // its node failed): held until it is, or refused after the hold.
            let generation = self.live.generation(&h.msg.room);
            let ready = seen != Some(None) && generation.is_some();
            let slot = room_slot(&h.msg.room);
            let (node, asking) = match &h.ask {
                Some(n) => (n.clone(), true),
                None => (self.topo.node_of(slot), false),
            };
            // Its node is down: held until it answers, or the slot map names
            // another owner, or the hold ends. Other nodes' rooms go on.
            let ready = ready && self.ensure(&node);
            let key = (node, (asking || h.alone).then_some(slot), asking);
            let call = index.get(&key).copied();
            if !ready || seen.is_some_and(|place| place.map(|(g, _)| g) != call) {
                room_call.insert(Arc::from(h.msg.room.as_str()), None);
                waiting.push(h);
                continue;
            }
            if self.state.history.known_last_seq(&h.msg.room).is_none() {
                self.refuse(&h, "the room's history is loading on this server; message not sent, retry in a moment");
                self.release(&h);
                self.request_load(&h.msg.room);
                continue;
            }
            match seen {
                Some(Some((g, at))) => groups[g].rooms[at].1.push(batch.len()),
                _ => {
                    let g = call.unwrap_or_else(|| {
                        groups.push(Group { node: key.0.clone(), asking, rooms: Vec::new() });
                        index.insert(key, groups.len() - 1);
                        groups.len() - 1
                    });
                    let room: Arc<str> = Arc::from(h.msg.room.as_str());
                    room_call.insert(room.clone(), Some((g, groups[g].rooms.len())));
                    groups[g].rooms.push((room, vec![batch.len()]));
                }
            }
            h.generation = generation.unwrap_or_default();
            batch.push(h);
        }
        let wait = batch.is_empty() && !waiting.is_empty();
        for h in waiting.into_iter().rev() {
            self.held.push_front(h);
        }
        if wait {
            match self.rx.recv_timeout(Duration::from_millis(5)) {
                Ok(cmd) => self.take(cmd),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => self.stopping = true,
            }
        }
        if batch.is_empty() {
            return;
        }
        let mut outcome = Outcome::new(batch.len());
        let mut nodes: Vec<Node> = groups.iter().map(|g| g.node.clone()).collect();
        nodes.dedup();
        nodes.sort_by_key(|n| n.to_string());
        nodes.dedup();
        for node in nodes {
            let mine: Vec<&Group> = groups.iter().filter(|g| g.node == node).collect();
            if !self.ensure(&node) {
                // Lost since the selection (an earlier node's answer refreshed nothing here).
                outcome.retry.extend(mine.iter().flat_map(|g| g.messages()));
                continue;
            }
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for g in &mine {
                if g.asking {
                    pipe.cmd("ASKING").ignore();
                }
                self.script_call(&mut pipe, g, &batch);
            }
            let con = self.cons.get_mut(&node).expect("connected above");
            match pipe.query::<Vec<redis::Value>>(con) {
                Ok(values) => {
                    for (g, v) in mine.iter().zip(values) {
                        self.take_answer(&node, g, v, &mut batch, &mut outcome);
                    }
                }
                Err(e) => {
                    // The connection failed mid-batch: Redis may have run any of it.
                    let idx: Vec<usize> = mine.iter().flat_map(|g| g.messages()).collect();
                    for &i in &idx {
                        batch[i].in_doubt = true;
                    }
                    outcome.retry.extend(idx);
                    self.lost(&node, &e);
                }
            }
        }
        let metrics = self.state.metrics.clone();
        let m = &metrics.backend;
        outcome.retry.sort_unstable();
        let mut again: Vec<Held> = Vec::new();
        for (i, mut h) in batch.into_iter().enumerate() {
            if outcome.retry.binary_search(&i).is_ok() {
                again.push(h);
                continue;
            }
            h.ask = None;
            self.release(&h);
            match outcome.results[i] {
                Some(seq) if seq > 0 => {
                    m.redis_published.fetch_add(1, Relaxed);
                    h.msg.seq = seq as u64;
                    // Stored when it comes back through the subscription.
                    self.echoes.answered(h.msg, h.origin, h.generation);
                }
                Some(seq) if seq < 0 => {
                    // A resend of a message already published under the same
                    // clientId (by this pod or another): its sender sees that
                    // one; its origin pod stores it.
                    m.deduplicated.fetch_add(1, Relaxed);
                    log::debug!("message with clientId {:?} already published as seq {}", h.msg.client_id, -seq);
                }
                _ => self.refuse(&h, "the message could not be stored; not sent"),
            }
        }
        for h in again.into_iter().rev() {
            self.held.push_front(h);
        }
        if outcome.pause {
            std::thread::sleep(REDIRECT_PAUSE);
        }
    }
}
