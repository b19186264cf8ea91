//! websocket-server: a thread-per-core mio WebSocket chat server.
//!
//! (The crate overview and module layout are filled in as the modules land.)

pub mod config;
pub mod ws;
