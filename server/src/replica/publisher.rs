//! The publisher thread: workers' validated messages → Redis.
//!
//! Each message gets its id here, once, and keeps it across retries; the
//! publish script is idempotent per id, so a batch whose reply was lost can
//! be sent again without publishing anything twice. Messages that pile up
//! are pipelined, up to `PIPELINE_MAX` per round trip.
//!
//! While Redis is unreachable, messages are held for up to `HOLD` (a Redis
//! restart in Kubernetes takes a few seconds) and published when it
//! returns; what waits longer is refused with an `unavailable` error frame
//! to its sender. Nothing is dropped silently.
//!
//! A message whose script call went out but whose reply was lost is *in
//! doubt*: Redis may have run it. Within `HOLD` it is simply sent again
//! (the script answers a retry with the first seq). Past `HOLD` its sender
//! is refused like the others — almost always truthfully: Redis went away
//! before it ran — but the message is kept as *unresolved* and, once Redis
//! answers again, its dedupe marker is read: if the script had run after
//! all, the message was delivered, and it is written to MongoDB as its
//! origin pod must (counted, and logged as a warning: its sender was told
//! `unavailable`; a resend with the same `clientId` is deduplicated).
//!
//! A message for a room whose latest seq this pod does not know yet (a
//! cold room, see [`History`](crate::chat::history::History)) is refused
//! the same way, and the room is loaded: numbering it blind could restart
//! its sequence if Redis lost its data.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{dedupe_key, encode_fields, history_key, seq_key, CHANNEL, DEDUPE_TTL_SECS, PUBLISH_SCRIPT};
use crate::backoff::Backoff;
use crate::chat::protocol::{ChatMessage, Reject};
use crate::hub::inbox::ToWorker;
use crate::hub::{HubCommand, IdGen, Origin, Publish};
use crate::state::ServerState;
use crate::store::loader::LoadRequest;
use crate::store::mongo::one_line;
use crate::store::StoreSender;

/// Messages sent to Redis in one round trip at most.
const PIPELINE_MAX: usize = 256;
/// Messages held while Redis is unreachable, at most.
const HELD_MAX: usize = 16_384;
/// How long a message may wait for Redis before its sender is told.
pub const HOLD: Duration = Duration::from_secs(3);
/// Redis socket timeouts.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// An idle connection is checked this often.
const IDLE_PING: Duration = Duration::from_secs(1);
/// Unresolved messages kept at most (their markers live `DEDUPE_TTL_SECS`).
const UNRESOLVED_MAX: usize = 16_384;

/// A message waiting to be published.
struct Held {
    msg: ChatMessage,
    origin: Origin,
    since: Instant,
    /// Its script call was sent at least once without an answer: Redis may
    /// have published it.
    in_doubt: bool,
}

/// Starts the publisher; it exits after [`HubCommand::Stop`] once what it
/// holds is published or refused.
pub fn spawn(
    state: Arc<ServerState>,
    rx: Receiver<HubCommand>,
    client: redis::Client,
    store: Option<StoreSender>,
    loader: Option<Sender<LoadRequest>>,
) -> std::io::Result<JoinHandle<()>> {
    let publisher = Publisher {
        pod: state.config.pod_name.clone(),
        state,
        rx,
        client,
        store,
        loader,
        con: None,
        sha: String::new(),
        backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        ids: IdGen::new(),
        held: VecDeque::new(),
        unresolved: VecDeque::new(),
        stopping: false,
        ever_connected: false,
    };
    std::thread::Builder::new().name("redis-publisher".into()).spawn(move || publisher.run())
}

struct Publisher {
    state: Arc<ServerState>,
    rx: Receiver<HubCommand>,
    client: redis::Client,
    store: Option<StoreSender>,
    loader: Option<Sender<LoadRequest>>,
    con: Option<redis::Connection>,
    /// SHA1 of the loaded publish script.
    sha: String,
    backoff: Backoff,
    ids: IdGen,
    pod: String,
    held: VecDeque<Held>,
    /// Refused after `HOLD` while in doubt: resolved from their dedupe
    /// markers once Redis answers (see the module doc).
    unresolved: VecDeque<(ChatMessage, Instant)>,
    stopping: bool,
    ever_connected: bool,
}

impl Publisher {
    fn run(mut self) {
        loop {
            if self.con.is_none() && self.backoff.ready() {
                self.connect();
            }
            self.take_commands();
            if self.stopping && self.held.is_empty() {
                break;
            }
            if self.con.is_some() {
                if !self.held.is_empty() {
                    self.publish_batch();
                }
            } else if !self.held.is_empty() {
                self.refuse_expired();
                // Wait for Redis, taking new messages meanwhile, without spinning.
                let wait = self.backoff.remaining().clamp(Duration::from_millis(5), Duration::from_millis(100));
                match self.rx.recv_timeout(wait) {
                    Ok(cmd) => self.take(cmd),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => self.stopping = true,
                }
            }
        }
        log::debug!("redis-publisher stopped");
    }

    /// Takes what is queued; when nothing is held, waits for the first
    /// command — until the next reconnect attempt if Redis is down, or the
    /// next idle ping if it is up (so the connection state stays true).
    fn take_commands(&mut self) {
        if self.held.is_empty() && !self.stopping {
            let wait =
                if self.con.is_some() { IDLE_PING } else { self.backoff.remaining().max(Duration::from_millis(5)) };
            match self.rx.recv_timeout(wait) {
                Ok(cmd) => self.take(cmd),
                Err(RecvTimeoutError::Timeout) => self.ping_if_idle(),
                Err(RecvTimeoutError::Disconnected) => self.stopping = true,
            }
        }
        while self.held.len() < HELD_MAX && !self.stopping {
            match self.rx.try_recv() {
                Ok(cmd) => self.take(cmd),
                Err(_) => break,
            }
        }
    }

    /// Checks an idle connection, so an outage is seen (and logged, and
    /// counted) before the next message needs Redis.
    fn ping_if_idle(&mut self) {
        let Some(con) = self.con.as_mut() else { return };
        if let Err(e) = redis::cmd("PING").query::<String>(con) {
            let m = &self.state.metrics.backend;
            m.redis_errors.fetch_add(1, Relaxed);
            m.redis_publisher_up.store(0, Relaxed);
            self.con = None;
            if !self.backoff.failing() {
                log::warn!("Redis publisher lost its connection ({}); reconnecting with backoff", one_line(&e));
            }
            self.backoff.failed();
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
                    pod_name: self.pod.clone(),
                    timestamp_ms,
                    client_id,
                    user_id,
                };
                self.held.push_back(Held { msg, origin, since: Instant::now(), in_doubt: false });
            }
        }
    }

    fn connect(&mut self) {
        let attempt = self.client.get_connection_with_timeout(IO_TIMEOUT).and_then(|mut c| {
            c.set_read_timeout(Some(IO_TIMEOUT))?;
            c.set_write_timeout(Some(IO_TIMEOUT))?;
            let sha = redis::Script::new(PUBLISH_SCRIPT).load(&mut c)?;
            Ok((c, sha))
        });
        let m = &self.state.metrics.backend;
        match attempt {
            Ok((c, sha)) => {
                self.con = Some(c);
                self.sha = sha;
                self.backoff.succeeded();
                m.redis_publisher_up.store(1, Relaxed);
                if self.ever_connected {
                    m.redis_reconnects.fetch_add(1, Relaxed);
                    log::info!("Redis publisher reconnected");
                } else {
                    log::info!("Redis publisher connected");
                }
                self.ever_connected = true;
                self.resolve_unresolved();
            }
            Err(e) => {
                m.redis_errors.fetch_add(1, Relaxed);
                m.redis_publisher_up.store(0, Relaxed);
                let first = !self.backoff.failing();
                let wait = self.backoff.failed();
                if first {
                    log::warn!(
                        "Redis publisher cannot connect ({}); retrying with backoff (next in {wait:?})",
                        one_line(&e)
                    );
                }
            }
        }
    }

    fn publish_batch(&mut self) {
        let ring = self.state.history.ring();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut batch: Vec<Held> = Vec::new();
        while batch.len() < PIPELINE_MAX {
            let Some(h) = self.held.pop_front() else { break };
            let Some(floor) = self.state.history.known_last_seq(&h.msg.room) else {
                self.refuse(&h, "the room's history is loading on this server; message not sent, retry in a moment");
                self.request_load(&h.msg.room);
                continue;
            };
            pipe.cmd("EVALSHA")
                .arg(&self.sha)
                .arg(3)
                .arg(seq_key(&h.msg.room))
                .arg(history_key(&h.msg.room))
                .arg(dedupe_key(&h.msg))
                .arg(floor)
                .arg(encode_fields(&h.msg))
                .arg(CHANNEL)
                .arg(ring)
                .arg(DEDUPE_TTL_SECS)
                .arg(&h.msg.id);
            batch.push(h);
        }
        if batch.is_empty() {
            return;
        }
        let Some(con) = self.con.as_mut() else { return };
        let m = &self.state.metrics.backend;
        match pipe.query::<Vec<redis::Value>>(con) {
            Ok(values) => {
                let mut retry = Vec::new();
                for (mut h, v) in batch.into_iter().zip(values) {
                    match v {
                        redis::Value::Int(seq) if seq > 0 => {
                            m.redis_published.fetch_add(1, Relaxed);
                            h.msg.seq = seq as u64;
                            if let Some(store) = &self.store {
                                store.enqueue(h.msg);
                            }
                        }
                        redis::Value::Int(seq) if seq < 0 => {
                            // A resend of a message already published under the same
                            // clientId (by this pod or another): its sender sees that
                            // one; its origin pod stores it.
                            m.deduplicated.fetch_add(1, Relaxed);
                            log::debug!(
                                "message with clientId {:?} already published as seq {}",
                                h.msg.client_id,
                                -seq
                            );
                        }
                        redis::Value::ServerError(e) if e.code() == "NOSCRIPT" => retry.push(h),
                        other => {
                            m.redis_errors.fetch_add(1, Relaxed);
                            log::warn!("Redis refused a publish: {other:?}");
                            self.refuse(&h, "the message could not be stored; not sent");
                        }
                    }
                }
                if !retry.is_empty() {
                    // The script cache was flushed: reconnect (which loads it) and resend.
                    self.con = None;
                    for h in retry.into_iter().rev() {
                        self.held.push_front(h);
                    }
                }
            }
            Err(e) => {
                // The connection failed mid-batch. The script is idempotent per
                // message id, so the batch is simply sent again once reconnected.
                m.redis_errors.fetch_add(1, Relaxed);
                m.redis_publisher_up.store(0, Relaxed);
                self.con = None;
                let first = !self.backoff.failing();
                let wait = self.backoff.failed();
                if first {
                    log::warn!(
                        "Redis publish failed ({}); holding {} messages, retrying in {wait:?}",
                        one_line(&e),
                        batch.len()
                    );
                }
                for mut h in batch.into_iter().rev() {
                    h.in_doubt = true;
                    self.held.push_front(h);
                }
            }
        }
    }

    /// Refuses held messages that have waited longer than `HOLD`; those in
    /// doubt are kept as unresolved.
    fn refuse_expired(&mut self) {
        let mut refused = 0;
        while self.held.front().is_some_and(|h| h.since.elapsed() >= HOLD) {
            let h = self.held.pop_front().expect("checked");
            self.refuse(&h, "Redis is unreachable; message not sent, retry later");
            refused += 1;
            if h.in_doubt {
                if self.unresolved.len() >= UNRESOLVED_MAX {
                    self.unresolved.pop_front();
                }
                self.unresolved.push_back((h.msg, Instant::now()));
            }
        }
        if refused > 0 {
            log::warn!("Redis unreachable for {HOLD:?}: refused {refused} messages with `unavailable`");
        }
    }

    /// Reads the dedupe markers of the unresolved messages (just after a
    /// reconnect): a marker naming the message means the script had run,
    /// so the message was delivered and is stored now. Markers expire after
    /// `DEDUPE_TTL_SECS`; older unresolved messages are dropped unread.
    fn resolve_unresolved(&mut self) {
        let ttl = Duration::from_secs(DEDUPE_TTL_SECS);
        self.unresolved.retain(|(_, at)| at.elapsed() < ttl);
        if self.unresolved.is_empty() {
            return;
        }
        let Some(con) = self.con.as_mut() else { return };
        let mut pipe = redis::pipe();
        for (msg, _) in &self.unresolved {
            pipe.cmd("GET").arg(dedupe_key(msg));
        }
        let markers: Vec<Option<String>> = match pipe.query(con) {
            Ok(m) => m,
            Err(e) => {
                log::debug!("reading the markers of unresolved messages failed ({}); next reconnect", one_line(&e));
                return; // still unresolved; the next reconnect tries again
            }
        };
        let mut published = 0;
        for ((mut msg, _), marker) in std::mem::take(&mut self.unresolved).into_iter().zip(markers) {
            let Some((seq, owner)) = marker.as_deref().and_then(|m| m.split_once(' ')) else { continue };
            if owner != msg.id {
                continue;
            }
            let Ok(seq) = seq.parse::<u64>() else { continue };
            msg.seq = seq;
            published += 1;
            self.state.metrics.backend.redis_published.fetch_add(1, Relaxed);
            if let Some(store) = &self.store {
                store.enqueue(msg);
            }
        }
        if published > 0 {
            log::warn!(
                "{published} messages refused as `unavailable` during the Redis outage had been published before \
                 it; they were delivered and are now stored"
            );
        }
    }

    fn refuse(&self, h: &Held, text: &str) {
        if let Some(inbox) = self.state.inboxes.get(h.origin.worker) {
            inbox.send(ToWorker::Reject {
                key: h.origin.key,
                conn_id: h.origin.conn_id,
                reject: Reject::new("unavailable", text),
            });
        }
    }

    fn request_load(&self, room: &str) {
        if let Some(loader) = &self.loader {
            let _ = loader.try_send(LoadRequest { room: Arc::from(room), since: None, last: None, reply: None });
        }
    }
}
