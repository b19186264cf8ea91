//! Conn: one client connection, as a worker's slab entry.
//!
//! A connection starts speaking HTTP; a WebSocket upgrade turns the same
//! entry into a WebSocket session (chat or echo). Its state is two
//! orthogonal parts: the [`Phase`] (which protocol it speaks) and
//! [`Closing`] (how far it is in ending). Lifecycle:
//!
//! ```text
//! Http ──request──▶ respond ──keep-alive──▶ Http
//!   │                  └──close──▶ Flushing
//!   └──upgrade──▶ Ws ──close frame sent or received──▶ Flushing { close_sent }
//! Flushing ──queue empty──▶ shutdown(Write), Lingering ──EOF or deadline──▶ removed
//! any ──peer's EOF with output queued──▶ PeerGone ──queue empty──▶ removed
//! ```
//!
//! Lingering (reading until the peer's FIN after shutting our write side)
//! means our last bytes — a response, a close frame — are never destroyed
//! by a reset when the peer still had data in flight. After a drain close
//! the client's in-flight chat messages are still read and published
//! (`Input::Read`), so nothing it sent is lost.
//!
//! Invariants:
//! - `Closing` only moves forward: Open → Flushing → Lingering, or to
//!   PeerGone from Open or Flushing; `close_sent` and `Input::Discard`,
//!   once set, stay set (see [`Closing::end_after_flush`]).
//! - `close_sent` is only ever true in the `Ws` phase.
//! - The http_connections gauge counts the `Http` and `HistoryLoad` phases,
//!   ws_connections (and a MAX_CONNECTIONS slot) the `Ws` phase: the phase
//!   says which one a connection holds, no flag repeats it.
//!
//! Idle cost: no read or write buffer is held while idle (`inbuf` keeps
//! only a partial frame; both are released by the worker's tick).

use mio::net::TcpStream;

use super::outq::OutQueue;
use crate::chat::session::ChatSession;
use crate::metrics::CloseReason;
use crate::ws::Decoder;

/// Seconds allowed for a close handshake (and lingering) before the socket is dropped.
pub const CLOSE_TIMEOUT_SECS: u32 = 5;

/// Bit flags of [`Conn::flags`]: work-list membership and per-connection
/// facts that are not part of the phase or the closing state. Bits 2–5,
/// 9–11 are free (they held closing states and phase copies, now
/// [`Closing`] and [`Phase`]).
pub mod flag {
    /// In the worker's pending-write list.
    pub const IN_PENDING: u16 = 1 << 0;
    /// The last write hit WouldBlock: wait for a writable event.
    pub const WRITE_BLOCKED: u16 = 1 << 1;
    /// The peer's close frame arrived: once ours is written too, the close
    /// handshake is complete and the server closes the TCP connection first
    /// (RFC 6455 §7.1.1) instead of lingering for the peer's FIN.
    pub const CLOSE_RECEIVED: u16 = 1 << 2;
    /// In the worker's close queue: removed at the end of the loop turn.
    pub const DOOMED: u16 = 1 << 6;
    /// Read budget used up with data possibly left: read again next loop.
    pub const READ_PENDING: u16 = 1 << 7;
    /// A ping was sent since the client was last heard from.
    pub const PINGED: u16 = 1 << 8;
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

/// Whether what the client still sends is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Read and handled (after a drain or slow-consumer close: chat messages
    /// in flight are still published).
    Read,
    /// Read and dropped (a protocol error, the peer's close, an HTTP error).
    Discard,
}

/// How far a connection is in ending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// Not closing.
    Open,
    /// The last output is queued (an HTTP response that ends the connection,
    /// or a close frame when `close_sent`): once written, shut our write side.
    Flushing {
        /// A close frame was queued: send nothing more.
        close_sent: bool,
        /// What happens to further input.
        input: Input,
    },
    /// Write side shut; reading until the peer's FIN (or the deadline).
    Lingering {
        /// A close frame was sent.
        close_sent: bool,
        /// What happens to further input.
        input: Input,
    },
    /// The peer closed its side (EOF) while output was queued: write it,
    /// then remove the connection at once. Input is over.
    PeerGone {
        /// A close frame was queued.
        close_sent: bool,
    },
}

impl Closing {
    /// A close frame was queued: nothing more is sent.
    pub fn close_sent(self) -> bool {
        match self {
            Closing::Open => false,
            Closing::Flushing { close_sent, .. }
            | Closing::Lingering { close_sent, .. }
            | Closing::PeerGone { close_sent } => close_sent,
        }
    }

    /// Further input is dropped.
    pub fn discards_input(self) -> bool {
        match self {
            Closing::Open => false,
            Closing::Flushing { input, .. } | Closing::Lingering { input, .. } => input == Input::Discard,
            Closing::PeerGone { .. } => true,
        }
    }

    /// The connection ends once its queue is written (any state but Open).
    pub fn is_closing(self) -> bool {
        self != Closing::Open
    }

    /// The last output is being queued: end after the flush, with
    /// `close_sent` and `discard` added to what is already set (they are
    /// never unset; a later state stays where it is).
    #[must_use]
    pub fn end_after_flush(self, close_sent: bool, discard: bool) -> Closing {
        let input_or = |input: Input| if discard { Input::Discard } else { input };
        match self {
            Closing::Open => Closing::Flushing { close_sent, input: input_or(Input::Read) },
            Closing::Flushing { close_sent: sent, input } => {
                Closing::Flushing { close_sent: sent || close_sent, input: input_or(input) }
            }
            Closing::Lingering { close_sent: sent, input } => {
                Closing::Lingering { close_sent: sent || close_sent, input: input_or(input) }
            }
            Closing::PeerGone { close_sent: sent } => Closing::PeerGone { close_sent: sent || close_sent },
        }
    }

    /// Input is dropped from now on (the peer's close frame arrived after ours).
    #[must_use]
    pub fn discard_input(self) -> Closing {
        match self {
            Closing::Open => Closing::Open,
            other => other.end_after_flush(false, true),
        }
    }
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
    /// How far it is in ending.
    pub closing: Closing,
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
            flags: 0,
            closing: Closing::Open,
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

    /// A close frame was queued: nothing more is sent to it.
    pub fn close_sent(&self) -> bool {
        self.closing.close_sent()
    }

    /// Further input is dropped: a closing state says so, or a deferred
    /// `/history` response (the connection's last) is pending.
    pub fn ignores_input(&self) -> bool {
        self.closing.discards_input() || matches!(self.phase, Phase::HistoryLoad { .. })
    }

    /// Upgraded (holds a WebSocket slot of MAX_CONNECTIONS and counts in the
    /// ws_connections gauge; before, in http_connections).
    pub fn is_ws(&self) -> bool {
        matches!(self.phase, Phase::Ws { .. })
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
            Phase::Ws { service: Service::Chat(c), .. } if !c.joined && !self.close_sent() => {
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

#[cfg(test)]
mod tests {
    use super::{Closing, Input};

    #[test]
    fn closing_only_moves_forward_and_keeps_what_was_set() {
        let http_error = Closing::Open.end_after_flush(false, true);
        assert_eq!(http_error, Closing::Flushing { close_sent: false, input: Input::Discard });
        assert!(!http_error.close_sent() && http_error.discards_input() && http_error.is_closing());
        // A drain close keeps reading; the peer's close frame then ends input.
        let drain = Closing::Open.end_after_flush(true, false);
        assert_eq!(drain, Closing::Flushing { close_sent: true, input: Input::Read });
        assert!(drain.close_sent() && !drain.discards_input());
        assert_eq!(drain.discard_input(), Closing::Flushing { close_sent: true, input: Input::Discard });
        // A later keep-reading close never turns discarding back into reading.
        assert!(drain.discard_input().end_after_flush(true, false).discards_input());
        // Lingering and PeerGone stay where they are.
        let lingering = Closing::Lingering { close_sent: true, input: Input::Read };
        assert_eq!(lingering.discard_input(), Closing::Lingering { close_sent: true, input: Input::Discard });
        let gone = Closing::PeerGone { close_sent: false };
        assert!(gone.discards_input());
        assert_eq!(gone.end_after_flush(true, false), Closing::PeerGone { close_sent: true });
        assert_eq!(Closing::Open.discard_input(), Closing::Open);
        assert!(!Closing::Open.is_closing() && !Closing::Open.discards_input());
    }
}
