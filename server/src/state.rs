//! ServerState: what the workers share with each other and with the main
//! thread — the configuration, metrics, history, the ways out of a worker
//! (into the sequencer, the loader, the Redis subscriber), the inboxes
//! (read by `/metrics` and the drain), the shutdown phase and the
//! connection count. The HTTP routes (public and admin) answer from it.
//!
//! The other threads are not given it: each gets the handles it uses
//! (`channels::SequencerHandles`, `replica::subscriber::SubscriberHandles`,
//! `store::loader::LoaderHandles`, the MongoDB writer its metrics), built by
//! server.rs from the same `Arc`s, so no thread module depends on this one.

use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Sender;

use crate::auth::peer::PeerTable;
use crate::channels::{HubCommand, Interest, LoadRequest, Workers};
use crate::chat::history::{Backing, History};
use crate::config::Config;
use crate::hub::inbox::InboxSender;
use crate::metrics::Metrics;

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Serving; `/ready` is 200 unless at capacity.
    Running = 0,
    /// A signal arrived: `/ready` is 503, everything else still works.
    Draining = 1,
    /// Listeners are closed and connections are being closed.
    Closing = 2,
}

/// Shared by the workers and the main thread.
#[derive(Debug)]
pub struct ServerState {
    /// The configuration, fixed at start-up.
    pub config: Config,
    /// Every counter (the other threads hold the same `Arc`).
    pub metrics: Arc<Metrics>,
    /// Recent messages per room (the other threads hold the same `Arc`).
    pub history: Arc<History>,
    /// One per worker, by worker index.
    pub inboxes: Vec<InboxSender>,
    /// Into the sequencer (embedded hub or Redis publisher); bounded.
    pub publish: Sender<HubCommand>,
    /// Into the history loader, when a store stands behind history; bounded.
    pub loader: Option<Sender<LoadRequest>>,
    /// Into the Redis subscriber (replica mode): which rooms have members here.
    pub interest: Option<Sender<Interest>>,
    /// When the process started.
    pub started: Instant,
    /// Per-address connection counts and upgrade buckets.
    pub peers: PeerTable,
    phase: AtomicU8,
    next_conn_id: AtomicU64,
    /// WebSocket connections in the process, for MAX_CONNECTIONS.
    ws_count: AtomicUsize,
}

impl ServerState {
    /// Shared state for a process about to start its threads.
    pub fn new(
        config: Config,
        inboxes: Vec<InboxSender>,
        publish: Sender<HubCommand>,
        loader: Option<Sender<LoadRequest>>,
        interest: Option<Sender<Interest>>,
    ) -> ServerState {
        let metrics = Arc::new(Metrics::new(inboxes.len()));
        let redis = config.redis_url.is_some() || config.redis_cluster_nodes.is_some();
        let backing = match (redis, &config.mongo_uri) {
            (false, None) => Backing::Memory,
            (_, mongo) => Backing::Store { deep: mongo.is_some() },
        };
        let peers = PeerTable::new(config.peer_limits);
        let history = Arc::new(History::new(config.history_ring, config.history_max_bytes, backing));
        ServerState {
            config,
            metrics,
            history,
            inboxes,
            publish,
            loader,
            interest,
            started: Instant::now(),
            peers,
            phase: AtomicU8::new(Phase::Running as u8),
            next_conn_id: AtomicU64::new(1),
            ws_count: AtomicUsize::new(0),
        }
    }

    /// The way into every worker, for a thread that answers or broadcasts
    /// to them.
    pub fn workers(&self) -> Workers {
        Workers {
            inboxes: self.inboxes.clone(),
            compression: self.config.compression,
            compression_min_bytes: self.config.compression_min_bytes,
            metrics: self.metrics.clone(),
        }
    }

    /// Tells the Redis subscriber (replica mode) that a connection started
    /// joining `room` (`true`) or is gone (`false`).
    pub fn room_interest(&self, room: &Arc<str>, joining: bool) {
        if let Some(tx) = &self.interest {
            let i = if joining { Interest::Join(room.clone()) } else { Interest::Leave(room.clone()) };
            let _ = tx.send(i);
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Running,
            1 => Phase::Draining,
            _ => Phase::Closing,
        }
    }

    /// Moves to `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// A connection id unique in this process (slab keys are reused; ids are not).
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Takes a WebSocket slot if one is free.
    pub fn try_reserve_ws(&self) -> bool {
        let max = self.config.max_connections;
        self.ws_count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
    }

    /// Returns a WebSocket slot.
    pub fn release_ws(&self) {
        self.ws_count.fetch_sub(1, Ordering::AcqRel);
    }

    /// WebSocket connections open now.
    pub fn ws_count(&self) -> usize {
        self.ws_count.load(Ordering::Acquire)
    }

    /// Whether a load balancer should send new clients here.
    pub fn ready(&self) -> bool {
        self.phase() == Phase::Running && self.ws_count() < self.config.max_connections
    }

    /// Seconds since start.
    pub fn uptime_secs(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }
}
