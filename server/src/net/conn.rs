//! Conn: one client connection, as a worker's slab entry.
//!
//! A connection starts speaking HTTP; a WebSocket upgrade turns the same
//! entry into a WebSocket session (chat or echo). Lifecycle:
//!
//! ```text
//! Http ──request──▶ respond ──keep-alive──▶ Http
//!   │                  └──close──▶ CLOSE_AFTER_FLUSH
//!   └──upgrade──▶ Ws ──close frame sent or received──▶ CLOSE_SENT + CLOSE_AFTER_FLUSH
//! CLOSE_AFTER_FLUSH ──queue empty──▶ shutdown(Write), LINGER ──EOF or deadline──▶ removed
//! ```
//!
//! Lingering (reading until the peer's FIN after shutting our write side)
//! means our last bytes — a response, a close frame — are never destroyed
//! by a reset when the peer still had data in flight. After a drain close
//! the client's in-flight chat messages are still read and published
//! (CLOSE_SENT without DISCARD_INPUT), so nothing it sent is lost.
//!
//! Idle cost: no read or write buffer is held while idle (`inbuf` keeps
//! only a partial frame; both are released by the worker's tick).

use std::sync::Arc;

use mio::net::TcpStream;

use super::outq::OutQueue;
use crate::chat::ratelimit::TokenBucket;
use crate::metrics::CloseReason;
use crate::ws::Decoder;

/// Bit flags of [`Conn::flags`].
pub mod flag {
    /// In the worker's pending-write list.
    pub const IN_PENDING: u16 = 1 << 0;
    /// The last write hit WouldBlock: wait for a writable event.
    pub const WRITE_BLOCKED: u16 = 1 << 1;
    /// Shut the write side once the queue is empty, then linger.
    pub const CLOSE_AFTER_FLUSH: u16 = 1 << 2;
    /// Write side shut; waiting for the peer's FIN (or the deadline).
    pub const LINGER: u16 = 1 << 3;
    /// A close frame was queued: send nothing more.
    pub const CLOSE_SENT: u16 = 1 << 4;
    /// Ignore further input (protocol error, peer's close, HTTP error).
    pub const DISCARD_INPUT: u16 = 1 << 5;
    /// In the worker's close queue: removed in `before_sleep`.
    pub const DOOMED: u16 = 1 << 6;
    /// Read budget used up with data possibly left: read again next loop.
    pub const READ_PENDING: u16 = 1 << 7;
    /// A ping was sent since the client was last heard from.
    pub const PINGED: u16 = 1 << 8;
    /// Counted in the http_connections gauge (not yet upgraded).
    pub const HTTP: u16 = 1 << 9;
    /// Holds a WebSocket slot of MAX_CONNECTIONS.
    pub const WS_SLOT: u16 = 1 << 10;
    /// The peer closed its side (EOF seen): after the flush, remove at once.
    pub const PEER_EOF: u16 = 1 << 11;
    /// Over the outbound bound: to be closed as a slow consumer after the fan-out.
    pub const SLOW: u16 = 1 << 12;
    /// Accepted on the admin listener (`ADMIN_PORT`): operator endpoints only.
    pub const ADMIN: u16 = 1 << 13;
    /// permessage-deflate negotiated (both ways without context takeover):
    /// compressed frames may be sent and received. No other state is kept
    /// per connection: the compressor and inflater belong to the threads.
    pub const DEFLATE: u16 = 1 << 14;
    /// With DEFLATE: the client limited our window (`server_max_window_bits`
    /// below 15), so only messages up to `ws::deflate::SMALL_WINDOW_MAX_LEN`
    /// bytes are sent compressed.
    pub const DEFLATE_SMALL_WINDOW: u16 = 1 << 15;
}

/// A chat session's state.
#[derive(Debug)]
pub struct ChatSession {
    /// The room.
    pub room: Arc<str>,
    /// Position in the worker's RoomIndex, valid when `joined`.
    pub slot: u32,
    /// A member of the room's index (receives broadcasts).
    pub joined: bool,
    /// `since` requested at upgrade, used when the join completes.
    pub since: Option<u64>,
    /// Default user name.
    pub name: Box<str>,
    /// Highest seq queued to this client; broadcasts at or below it are skipped.
    pub delivered: u64,
    /// Chat message rate limit.
    pub bucket: TokenBucket,
    /// Rate-limited messages in a row.
    pub strikes: u8,
}

/// The WebSocket service of a connection.
#[derive(Debug)]
pub enum Service {
    /// The chat.
    Chat(Box<ChatSession>),
    /// Raw echo.
    Echo,
}

/// What protocol the connection speaks now.
#[derive(Debug)]
pub enum Phase {
    /// Waiting for (the next) HTTP request.
    Http,
    /// A `/history` request waiting for the history loader (a room this
    /// pod has not loaded, or reaching back past the ring into MongoDB).
    /// Its response is the connection's last: input is ignored meanwhile.
    HistoryLoad {
        /// The room.
        room: std::sync::Arc<str>,
        /// Messages asked for.
        limit: usize,
        /// A HEAD request (the body is left out).
        head_only: bool,
    },
    /// Upgraded.
    Ws {
        /// Frame decoding state.
        decoder: Decoder,
        /// Chat or echo.
        service: Service,
    },
}

/// One connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub socket: TcpStream,
    /// Unique id in the process (slab keys are reused).
    pub id: u64,
    /// HTTP or WebSocket.
    pub phase: Phase,
    /// Bytes received but not yet parsed (a partial request or frame). Empty,
    /// and without allocation, most of the time.
    pub inbuf: Vec<u8>,
    /// Bytes waiting to be written.
    pub out: super::outq::OutQueue,
    /// See [`flag`].
    pub flags: u16,
    /// Worker clock (s) of the last byte received.
    pub last_rx: u32,
    /// Worker clock (s) of the phase's deadline: end of the handshake window
    /// while in HTTP, the token's expiry (`u32::MAX` without one) while an
    /// open WebSocket, end of the close handshake once closing.
    pub deadline: u32,
    /// Why it is closing, counted once when it is removed.
    pub close_reason: Option<CloseReason>,
    /// Bytes allowed beyond MAX_OUTBOUND_BYTES until the queue first
    /// empties: the connection's own replies (HTTP responses, the welcome
    /// frame, whose resume may carry a long history), never broadcasts.
    pub allowance: u32,
}

impl Conn {
    /// A freshly accepted connection.
    pub fn new(socket: TcpStream, id: u64, now: u32, handshake_secs: u32) -> Conn {
        Conn {
            socket,
            id,
            phase: Phase::Http,
            inbuf: Vec::new(),
            out: OutQueue::default(),
            flags: flag::HTTP,
            last_rx: now,
            deadline: now + handshake_secs,
            close_reason: None,
            allowance: 0,
        }
    }

    /// Whether `f` is set.
    pub fn has(&self, f: u16) -> bool {
        self.flags & f != 0
    }

    /// The chat session, if this is one.
    pub fn chat(&mut self) -> Option<&mut ChatSession> {
        match &mut self.phase {
            Phase::Ws { service: Service::Chat(c), .. } => Some(c),
            _ => None,
        }
    }

    /// The room and `since` of a resume still waiting to join (not joined, not closing).
    pub fn waiting_resume(&self) -> Option<(&str, u64)> {
        match &self.phase {
            Phase::Ws { service: Service::Chat(c), .. } if !c.joined && !self.has(flag::CLOSE_SENT) => {
                c.since.map(|s| (&*c.room, s))
            }
            _ => None,
        }
    }

    /// Records the first reason for closing.
    pub fn set_reason(&mut self, reason: CloseReason) {
        self.close_reason.get_or_insert(reason);
    }
}
