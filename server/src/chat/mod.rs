//! The chat: its JSON protocol, the per-worker room index, per-connection
//! rate limits, and the per-room message history.

pub mod history;
pub mod protocol;
pub mod ratelimit;
pub mod rooms;
pub mod session;
