//! Server: starts the threads of one process and stops them in order.
//!
//! Threads: `worker-N` (the event loops); the sequencer — `hub` (embedded)
//! or `redis-publisher` and `redis-subscriber` (replica mode);
//! `history-loader` and `mongo-writer` when a store is configured;
//! `signals`; and the main thread, which waits for a signal, logs a stats
//! line every 10 s and conducts the shutdown:
//!
//! 1. first SIGTERM/SIGINT: phase Draining — `/ready` turns 503 at once;
//! 2. after DRAIN_DELAY_SECS: phase Closing — each worker closes its
//!    listener and closes its clients with 1001, spread over
//!    DRAIN_WINDOW_SECS, reading what they still send;
//! 3. when the workers are done: the sequencer finishes its queue (the
//!    Redis publisher waits at most its hold time for Redis), the
//!    subscription stops, the MongoDB writer flushes (at most
//!    `MONGO_FLUSH`), and the process exits 0;
//! 4. a second signal at any point exits at once (status 1).
//!
//! A worker thread that dies (a panic outside the per-connection
//! `catch_unwind`, or its poll failing) is seen at once: its exit guard
//! ([`WorkerExit`]) runs during the unwinding, logs it, counts it
//! (`websocket_worker_deaths_total`), releases its WebSocket slots and
//! tells the main thread, and `/health` answers 503 from then on. The main
//! thread then drains the other workers as for a signal, and the process
//! exits 1 so that the pod is restarted.
//!
//! The whole sequence is bounded, whatever Redis and MongoDB do: the
//! process exits by DRAIN_DELAY_SECS + DRAIN_WINDOW_SECS + `CLOSE_GRACE` +
//! the publisher's `HOLD` + `MONGO_FLUSH` after the first signal (the
//! budget the Kubernetes manifest is checked against, by
//! tools/k8s-checks/contract_test.py). A thread still running at its
//! deadline is left behind, and the exit says which.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use mio::{Poll, Waker};
use websocket_mongo::Mongo;

use crate::channels::{HubCommand, SequencerHandles, StoreSender};
use crate::config::Config;
use crate::hub::inbox::{inbox, ToWorker};
use crate::hub::{embedded, PUBLISH_QUEUE_MAX};
use crate::metrics::CloseReason;
use crate::net::listener;
use crate::net::worker::{Worker, WAKER};
use crate::replica::echo::Echoes;
use crate::replica::subscriber::SubscriberHandles;
use crate::replica::topology::Topology;
use crate::replica::{publisher, subscriber, LiveRooms};
use crate::state::{Phase, ServerState};
use crate::store::loader::{self, LoaderHandles};
use crate::store::writer::spawn_writer;

/// How often the main thread logs a stats line.
const STATS_INTERVAL: Duration = Duration::from_secs(10);
/// Time for the workers' close handshakes after the drain window.
const CLOSE_GRACE: Duration = Duration::from_secs(8);
/// Longest the MongoDB writer may take to flush its queue at exit.
const MONGO_FLUSH: Duration = Duration::from_secs(4);

/// History loads that may wait before joins stop waiting for them.
const LOADER_QUEUE_MAX: usize = 65_536;

/// A running server process.
#[derive(Debug)]
pub struct Server {
    state: Arc<ServerState>,
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    workers: Vec<JoinHandle<()>>,
    /// Each worker sends its index here when its thread ends, however it ends.
    worker_done: Receiver<usize>,
    /// The embedded hub or the Redis publisher.
    sequencer: Option<JoinHandle<()>>,
    /// The Redis subscriber and its stop flag.
    subscriber: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
    /// The MongoDB writer and the deadline it flushes by once shutdown began.
    writer: Option<(JoinHandle<()>, Arc<OnceLock<Instant>>)>,
}

impl Server {
    /// Binds the port and starts every thread.
    pub fn start(config: Config) -> io::Result<Server> {
        let listeners = listener::bind(config.bind_addr, config.port, config.workers)?;
        let local_addr = listeners[0].local_addr()?;
        // The operator endpoints' port: served by the same workers, on
        // listeners of their own (net/worker.rs; docs/architecture.md).
        let admin_listeners: Vec<Option<_>> = match config.admin_port {
            Some(port) => listener::bind(config.bind_addr, port, config.workers)?.into_iter().map(Some).collect(),
            None => (0..config.workers).map(|_| None).collect(),
        };
        let admin_addr = match admin_listeners.first() {
            Some(Some(l)) => Some(l.local_addr()?),
            _ => None,
        };
        let mut polls = Vec::new();
        let mut senders = Vec::new();
        let mut receivers = Vec::new();
        for _ in 0..config.workers {
            let poll = Poll::new()?;
            let (tx, rx) = inbox(Waker::new(poll.registry(), WAKER)?);
            polls.push(poll);
            senders.push(tx);
            receivers.push(rx);
        }
        let invalid =
            |what: &str, e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"));
        let redis = match (&config.redis_url, &config.redis_cluster_nodes) {
            (Some(url), _) => Some(Topology::standalone(url).map_err(|e| invalid("REDIS_URL", &e))?),
            (None, Some(nodes)) => Some(
                Topology::cluster(nodes, config.redis_password.as_deref())
                    .map_err(|e| invalid("REDIS_CLUSTER_NODES", &e))?,
            ),
            (None, None) => None,
        }
        .map(Arc::new);
        let mongo = config.mongo_uri.as_deref().map(Mongo::open).transpose().map_err(|e| invalid("MONGO_URI", &e))?;
        let (publish_tx, publish_rx) = crossbeam_channel::bounded(PUBLISH_QUEUE_MAX);
        let (loader_tx, loader_rx) = match redis.is_some() || mongo.is_some() {
            true => {
                let (tx, rx) = crossbeam_channel::bounded(LOADER_QUEUE_MAX);
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let (interest_tx, interest_rx) = match redis.is_some() {
            true => {
                let (tx, rx) = crossbeam_channel::unbounded();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let state = Arc::new(ServerState::new(config, senders, publish_tx, loader_tx, interest_tx));

        let mut writer = None;
        let store = match &mongo {
            Some(m) => {
                let (tx, rx) = crossbeam_channel::bounded(state.config.mongo_queue_max);
                let deadline = Arc::new(OnceLock::new());
                writer = Some((spawn_writer(state.metrics.clone(), m.clone(), rx, deadline.clone())?, deadline));
                Some(StoreSender::new(tx, state.metrics.clone(), state.config.mongo_queue_max))
            }
            None => {
                log::warn!(
                    "MONGO_URI is not set: messages live in memory only ({} per room) and are lost when every replica restarts",
                    state.config.history_ring
                );
                None
            }
        };
        if let Some(rx) = loader_rx {
            let handles = LoaderHandles {
                history: state.history.clone(),
                metrics: state.metrics.clone(),
                workers: state.workers(),
            };
            loader::spawn(handles, rx, redis.clone(), mongo.clone())?;
        }
        let sequencing = SequencerHandles {
            pod_name: state.config.pod_name.clone(),
            history: state.history.clone(),
            metrics: state.metrics.clone(),
            workers: state.workers(),
            loader: state.loader.clone(),
            store,
        };
        let (sequencer, subscriber, mode) = match redis {
            Some(topo) => {
                let stop = Arc::new(AtomicBool::new(false));
                let live = Arc::new(LiveRooms::default());
                let hold = state.config.redis_failover_hold.unwrap_or_else(|| topo.hold());
                log::info!("Redis: a message waits up to {hold:?} for its node (REDIS_FAILOVER_HOLD_MS)");
                let echoes = Arc::new(Echoes::new(sequencing.pod_name.clone(), sequencing.store.clone()));
                let publisher =
                    publisher::spawn(hold, sequencing, publish_rx, topo.clone(), live.clone(), echoes.clone())?;
                let mode = if topo.is_cluster() { "replica (Redis Cluster)" } else { "replica (Redis pub/sub)" };
                let interest = interest_rx.expect("created with the topology");
                let handles = SubscriberHandles {
                    history: state.history.clone(),
                    metrics: state.metrics.clone(),
                    workers: state.workers(),
                    room_linger: state.config.room_linger,
                    echoes,
                };
                let sub = subscriber::spawn(handles, topo, live, interest, stop.clone())?;
                (publisher, Some((sub, stop)), mode)
            }
            None => (embedded::spawn(sequencing, publish_rx)?, None, "embedded (single node)"),
        };
        let storage = match &mongo {
            Some(m) => format!("MongoDB {}", m.namespace()),
            None => "memory".to_string(),
        };

        let (done_tx, worker_done) = crossbeam_channel::unbounded();
        let mut workers = Vec::new();
        let listeners = listeners.into_iter().zip(admin_listeners);
        for (i, ((poll, listeners), inbox)) in polls.into_iter().zip(listeners).zip(receivers).enumerate() {
            let worker = Worker::new(i, poll, listeners, inbox, state.clone())?;
            let exit = WorkerExit { index: i, done: done_tx.clone(), state: state.clone() };
            workers.push(std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
                let _exit = exit; // dropped last, also when the loop panics
                worker.run();
            })?);
        }
        let admin = match admin_addr {
            Some(addr) => format!("; /health, /ready and /metrics on admin port {addr}"),
            None => String::new(),
        };
        log::info!(
            "listening on {local_addr} with {} workers{admin}; pod {}; mode {mode}; history in {storage}",
            state.config.workers,
            state.config.pod_name
        );
        Ok(Server {
            state,
            local_addr,
            admin_addr,
            workers,
            worker_done,
            sequencer: Some(sequencer),
            subscriber,
            writer,
        })
    }

    /// The address the listeners are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the admin listeners (`ADMIN_PORT`), if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The shared state (for embedding and tests).
    pub fn state(&self) -> &Arc<ServerState> {
        &self.state
    }

    /// Serves until a signal arrives on `signals`, then drains and stops.
    /// Returns the process exit status.
    pub fn serve(mut self, signals: Receiver<i32>) -> i32 {
        let mut stats = StatsLine::new(&self.state);
        let ticker = crossbeam_channel::tick(STATS_INTERVAL);
        let mut running = self.workers.len();
        let (signal, status) = loop {
            select! {
                recv(signals) -> sig => break (sig.unwrap_or(0), 0),
                recv(self.worker_done) -> i => {
                    running -= 1;
                    log::error!(
                        "worker {} stopped unexpectedly; draining the {running} others, then exiting with status 1",
                        i.unwrap_or(usize::MAX)
                    );
                    break (0, 1);
                }
                recv(ticker) -> _ => stats.log(&self.state),
            }
        };
        let started = Instant::now();
        self.state.set_phase(Phase::Draining);
        log::info!(
            "{}: draining; /ready now answers 503; closing {} clients in {}s",
            if status == 0 { format!("signal {signal}") } else { "a worker died".to_string() },
            self.state.ws_count(),
            self.state.config.drain_delay.as_secs()
        );
        select! {
            recv(signals) -> _ => return second_signal(),
            default(self.state.config.drain_delay) => {}
        }
        self.state.set_phase(Phase::Closing);
        let clients = self.state.ws_count();
        for inbox in &self.state.inboxes {
            inbox.send(ToWorker::Drain);
        }
        let deadline = Instant::now() + self.state.config.drain_window + CLOSE_GRACE;
        let exit_by = deadline + publisher::HOLD + MONGO_FLUSH;
        while running > 0 {
            select! {
                recv(signals) -> _ => return second_signal(),
                recv(self.worker_done) -> _ => running -= 1,
                recv(ticker) -> _ => stats.log(&self.state),
                default(deadline.saturating_duration_since(Instant::now())) => {
                    log::warn!("drain overran its window; {running} workers still closing; exiting anyway");
                    break;
                }
            }
        }
        let mut left_behind = Vec::new();
        for w in self.workers.drain(..) {
            join_by(w, deadline, &mut left_behind);
        }
        let _ = self.state.publish.send(HubCommand::Stop);
        if let Some(sequencer) = self.sequencer.take() {
            join_by(sequencer, exit_by, &mut left_behind);
        }
        if let Some((subscriber, stop)) = self.subscriber.take() {
            stop.store(true, std::sync::atomic::Ordering::Release);
            join_by(subscriber, exit_by, &mut left_behind);
        }
        if let Some((writer, deadline)) = self.writer.take() {
            // The sequencer threads held the last StoreSender (the hub, or the Redis
            // publisher and subscriber through their Echoes): the writer now drains and exits.
            let _ = deadline.set((Instant::now() + MONGO_FLUSH).min(exit_by));
            join_by(writer, exit_by, &mut left_behind);
        }
        if !left_behind.is_empty() {
            log::error!(
                "shutdown reached its deadline ({:.0}s after the signal) with {} still running; exiting without them",
                exit_by.saturating_duration_since(started).as_secs_f64(),
                left_behind.join(", ")
            );
        }
        let drained = self.state.metrics.closes(CloseReason::Drain);
        log::info!(
            "drained: {clients} clients closed ({drained} with 1001) in {:.1}s; exiting",
            started.elapsed().as_secs_f64()
        );
        status
    }
}

/// Dropped when a worker thread ends, normally or by unwinding a panic:
/// tells the main thread, and on a panic records the death first.
struct WorkerExit {
    index: usize,
    done: crossbeam_channel::Sender<usize>,
    state: Arc<ServerState>,
}

impl Drop for WorkerExit {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let m = &self.state.metrics.workers[self.index];
            m.died.store(1, Relaxed);
            // Its connections were dropped with it (their sockets closed):
            // give their WebSocket slots back to MAX_CONNECTIONS.
            let slots = m.ws_connections.swap(0, Relaxed).max(0);
            for _ in 0..slots {
                self.state.release_ws();
            }
            m.http_connections.store(0, Relaxed);
            log::error!(
                "worker {} died of a panic (see the message above); its {slots} WebSocket clients are disconnected; /health now fails",
                self.index
            );
        }
        let _ = self.done.send(self.index);
    }
}

/// Joins `thread` if it finishes by `deadline`; otherwise adds its name to
/// `left_behind` (the process exits without it).
fn join_by(thread: JoinHandle<()>, deadline: Instant, left_behind: &mut Vec<String>) {
    while !thread.is_finished() {
        if Instant::now() >= deadline {
            left_behind.push(thread.thread().name().unwrap_or("a thread").to_string());
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = thread.join();
}

fn second_signal() -> i32 {
    log::warn!("second signal: exiting at once");
    1
}

/// The periodic stats line: totals and rates since the previous line.
struct StatsLine {
    at: Instant,
    messages_in: u64,
    messages_out: u64,
}

impl StatsLine {
    fn new(state: &ServerState) -> StatsLine {
        let (messages_in, messages_out) = state.metrics.messages();
        StatsLine { at: Instant::now(), messages_in, messages_out }
    }

    fn log(&mut self, state: &ServerState) {
        let (msgs_in, msgs_out) = state.metrics.messages();
        let secs = self.at.elapsed().as_secs_f64().max(0.001);
        let (rss, _, _) = crate::metrics::process_usage();
        let m = &state.metrics;
        let rejected: u64 = m.workers.iter().map(|w| w.rejects.iter().map(|r| r.load(Relaxed)).sum::<u64>()).sum();
        log::info!(
            "stats connections={} messages_in={} ({:.0}/s) delivered={} ({:.0}/s) rejected={} slow_consumer_closes={} \
             rate_limit_closes={} outbound_bytes={} mongo_queue={} mongo_dropped={} rss_mb={:.1}",
            state.ws_count(),
            msgs_in,
            (msgs_in - self.messages_in) as f64 / secs,
            msgs_out,
            (msgs_out - self.messages_out) as f64 / secs,
            rejected,
            m.closes(CloseReason::SlowConsumer),
            m.closes(CloseReason::RateLimit),
            m.outbound_bytes(),
            m.backend.mongo_queue.load(Relaxed),
            m.backend.mongo_dropped.load(Relaxed),
            rss as f64 / 1048576.0
        );
        *self = StatsLine { at: Instant::now(), messages_in: msgs_in, messages_out: msgs_out };
    }
}

/// Forwards SIGTERM and SIGINT to a channel, from a thread of their own.
pub fn signal_channel() -> io::Result<Receiver<i32>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::Builder::new().name("signals".into()).spawn(move || {
        for sig in signals.forever() {
            if tx.send(sig).is_err() {
                break;
            }
        }
    })?;
    Ok(rx)
}
