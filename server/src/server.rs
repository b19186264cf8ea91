//! Server: starts the threads of one process and stops them in order.
//!
//! Threads: `worker-N` (the event loops), `hub` (the embedded sequencer;
//! in replica mode the Redis bridge), `mongo-writer` (when MONGO_URI is
//! set), `signals`, and the main thread, which waits for a signal, logs a
//! stats line every 10 s and conducts the shutdown:
//!
//! 1. first SIGTERM/SIGINT: phase Draining — `/ready` turns 503 at once;
//! 2. after DRAIN_DELAY_SECS: phase Closing — each worker closes its
//!    listener and closes its clients with 1001, spread over
//!    DRAIN_WINDOW_SECS, reading what they still send;
//! 3. when the workers are done: the sequencer finishes its queue, the
//!    MongoDB writer flushes, and the process exits 0;
//! 4. a second signal at any point exits at once (status 1).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};
use mio::{Poll, Waker};

use crate::config::Config;
use crate::hub::inbox::{inbox, ToWorker};
use crate::hub::{embedded, HubCommand, PUBLISH_QUEUE_MAX};
use crate::metrics::CloseReason;
use crate::net::listener;
use crate::net::worker::{Worker, WAKER};
use crate::state::{Phase, ServerState};

/// How often the main thread logs a stats line.
const STATS_INTERVAL: Duration = Duration::from_secs(10);
/// Time for the workers' close handshakes after the drain window.
const CLOSE_GRACE: Duration = Duration::from_secs(8);

/// A running server process.
#[derive(Debug)]
pub struct Server {
    state: Arc<ServerState>,
    local_addr: SocketAddr,
    workers: Vec<JoinHandle<()>>,
    /// Each worker sends its index here when its loop ends.
    worker_done: Receiver<usize>,
    hub: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds the port and starts every thread.
    pub fn start(config: Config) -> io::Result<Server> {
        let listeners = listener::bind(config.bind_addr, config.port, config.workers)?;
        let local_addr = listeners[0].local_addr()?;
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
        let (publish_tx, publish_rx) = crossbeam_channel::bounded(PUBLISH_QUEUE_MAX);
        let state = Arc::new(ServerState::new(config, senders, publish_tx));
        let hub = embedded::spawn(state.clone(), publish_rx, None)?;

        let (done_tx, worker_done) = crossbeam_channel::unbounded();
        let mut workers = Vec::new();
        for (i, ((poll, listener), inbox)) in polls.into_iter().zip(listeners).zip(receivers).enumerate() {
            let worker = Worker::new(i, poll, listener, inbox, state.clone())?;
            let done = done_tx.clone();
            workers.push(std::thread::Builder::new().name(format!("worker-{i}")).spawn(move || {
                worker.run();
                let _ = done.send(i);
            })?);
        }
        log::info!(
            "listening on {local_addr} with {} workers; pod {}; mode embedded (single node, in-memory history)",
            state.config.workers,
            state.config.pod_name
        );
        Ok(Server { state, local_addr, workers, worker_done, hub: Some(hub) })
    }

    /// The address the listeners are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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
        let signal = loop {
            select! {
                recv(signals) -> sig => break sig.unwrap_or(0),
                recv(self.worker_done) -> i => {
                    log::error!("worker {} stopped unexpectedly; exiting", i.unwrap_or(usize::MAX));
                    return 1;
                }
                recv(ticker) -> _ => stats.log(&self.state),
            }
        };
        let started = Instant::now();
        self.state.set_phase(Phase::Draining);
        log::info!(
            "signal {signal}: draining; /ready now answers 503; closing {} clients in {}s",
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
        let mut running = self.workers.len();
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
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let _ = self.state.publish.send(HubCommand::Stop);
        if let Some(hub) = self.hub.take() {
            let _ = hub.join();
        }
        let drained = self.state.metrics.closes(CloseReason::Drain);
        log::info!(
            "drained: {clients} clients closed ({drained} with 1001) in {:.1}s; exiting",
            started.elapsed().as_secs_f64()
        );
        0
    }
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
