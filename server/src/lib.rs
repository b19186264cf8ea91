//! websocket-server: a WebSocket chat server built directly on mio,
//! thread-per-core, for high connection counts on Kubernetes.
//!
//! A message sent on any connection gets the next sequence number of its
//! room, is stored, and reaches every member of the room, in order, with
//! no gap and no duplicate — on one node (the embedded hub) or across
//! replicas (Redis pub/sub, MongoDB persistence).
//!
//! # Layout
//! - [`auth`]: opt-in JWT authentication, per-room permissions,
//!   per-address limits.
//! - [`config`]: every environment variable, its default and its reason.
//! - [`server`]: starts the threads; signals, drain and exit.
//! - [`state`]: what the workers share (config, metrics, history, inboxes,
//!   the phase); the other threads get their own handles.
//! - [`channels`]: what crosses threads — the message types of every
//!   channel between threads and their sending handles.
//! - [`net`]: the event loops — `worker` (Poll, slab of connections,
//!   before-sleep writes), `conn` (one connection's state machine),
//!   `outq` (queued frames, vectored writes), `listener` (SO_REUSEPORT).
//! - [`http`]: request heads (httparse), the upgrade handshake, routes,
//!   the embedded chat page.
//! - [`ws`]: the RFC 6455 frame codec, shared with connflood.
//! - [`chat`]: the JSON protocol, rooms, rate limits, history.
//! - [`hub`]: sequencing and fan-out to the workers' inboxes; the embedded
//!   (single-node) sequencer.
//! - [`replica`]: the Redis bridge — publisher and subscriber threads.
//! - [`store`]: the MongoDB writer and the history loader (MongoDB itself,
//!   the collection, documents and write outcomes, is the `websocket-mongo`
//!   crate in server/mongo).
//! - [`backoff`]: capped exponential backoff with jitter.
//! - [`health`]: a dependency's health for one thread: error count,
//!   up-gauge, backoff, and the outage's log lines, once each.
//! - [`metrics`]: counters and the Prometheus exposition.
//! - [`clock`]: ISO 8601 timestamps.
//! - [`procfs`]: the open-file limit, CPU time and memory from /proc
//!   (shared with connflood).
//!
//! docs/architecture.md follows one message through these modules.

pub mod auth;
pub mod backoff;
pub mod channels;
pub mod chat;
pub mod clock;
pub mod config;
pub mod health;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod net;
pub mod procfs;
pub mod replica;
pub mod server;
pub mod state;
pub mod store;
pub mod ws;
