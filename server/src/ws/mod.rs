//! The WebSocket frame codec (RFC 6455 §5), shared by the server and connflood.
//!
//! Layers, each testable without the next (bytes → frame → message):
//! - [`mask`]: XOR masking of payloads in place.
//! - [`frame`]: one frame header, parsed from a byte slice or formatted into one.
//! - [`decoder`]: frames → messages: fragments, control frames between them,
//!   UTF-8 validated as it arrives, close payload rules, size limits.
//! - [`encoder`]: messages → frame bytes, built once and shared.
//! - [`deflate`]: permessage-deflate (RFC 7692) compression and inflation,
//!   per message (no context takeover), with state shared per thread.
//! - [`error`]: every rule a peer can break, and the close code it earns.
//!
//! The codec never owns a socket: callers hand it the bytes they read and
//! write the bytes it builds, so it fits an edge-triggered event loop.

pub mod decoder;
pub mod deflate;
pub mod encoder;
pub mod error;
pub mod frame;
pub mod mask;

pub use decoder::{Decoder, Limits, Message, Payload, Role};
pub use deflate::Inflater;
pub use error::WsError;
pub use frame::Header;
pub use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
