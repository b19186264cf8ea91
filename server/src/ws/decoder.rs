//! Frames → messages: the receiving half of the WebSocket protocol.
//!
//! [`Decoder::decode`] takes the unparsed bytes a connection has received,
//! handles at most one frame from their front and says how many bytes it
//! used. Short input is `Ok(None)` with nothing consumed, so the caller
//! keeps the bytes and calls again when more arrive. Payloads are unmasked
//! in place and, for single-frame messages, handed back as a borrow of the
//! caller's buffer: no copy beyond unmasking. Only fragmented messages are
//! assembled into an owned buffer, which the decoder holds between calls
//! (boxed, so a connection with no fragmented message in flight pays one
//! pointer).
//!
//! Every limit is checked as soon as the header is known, before any
//! payload is buffered. Text is validated as it arrives: a fragment that
//! makes the message invalid UTF-8 fails at once (§8.1 "fail fast"), and a
//! code point split across fragments is carried over.
//!
//! permessage-deflate (RFC 7692), when the caller passes an [`Inflater`]
//! to [`Decoder::decode_with`] (the extension was negotiated): RSV1 on the
//! first frame of a data message marks it compressed. Its fragments are
//! gathered compressed (up to [`deflate::compressed_limit`]) and inflated
//! whole at the final frame with the caller's inflater, whose output is
//! capped at `max_message` and is what the message borrows; UTF-8 is then
//! validated on the inflated text. RSV1 on a continuation or control frame,
//! or without the extension, is a protocol error (§6.1).

use super::deflate::{self, Inflater};
use super::encoder::RSV1;
use super::error::WsError;
use super::frame::Header;
use super::mask::apply_mask;
use super::{CloseCode, Control, Data, OpCode};

/// Which end of the connection this decoder is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Receives client frames, which must be masked.
    Server,
    /// Receives server frames, which must not be masked.
    Client,
}

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Which side we are.
    pub role: Role,
    /// Largest message (sum of its fragments) and therefore largest frame.
    pub max_message: usize,
}

/// A data payload: borrowed from the caller's buffer for a single-frame
/// message, owned when it was assembled from fragments.
#[derive(Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// The unmasked payload, inside the buffer given to `decode`.
    Borrowed(&'a [u8]),
    /// A message assembled from several frames.
    Owned(Vec<u8>),
}

impl Payload<'_> {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Borrowed(b) => b,
            Payload::Owned(v) => v,
        }
    }

    /// The payload as text. Only call on a [`Message::Text`] payload, which
    /// the decoder has validated; anything else yields `""`.
    pub fn as_text(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// One complete message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, valid UTF-8.
    Text(Payload<'a>),
    /// A binary message.
    Binary(Payload<'a>),
    /// A ping; answer with a pong carrying the same bytes.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// A close frame: `None` without a status code, or the code and reason.
    Close(Option<(u16, &'a str)>),
}

/// A fragmented data message being assembled.
#[derive(Debug)]
struct Fragments {
    /// Whether the first frame was text (validate UTF-8) or binary.
    is_text: bool,
    /// The first frame had RSV1: `data` is compressed, inflated at the end.
    compressed: bool,
    /// The unmasked payload so far.
    data: Vec<u8>,
    /// How much of `data` is known to be complete, valid UTF-8.
    utf8_checked: usize,
}

/// How far the payload of an incomplete text frame has been validated.
#[derive(Debug, Default)]
struct PartialText {
    /// Payload bytes of the front frame already checked.
    checked: usize,
    /// The bytes of a code point cut off at `checked`, unmasked.
    carry: [u8; 4],
    /// How many bytes of `carry` are in use.
    carry_len: usize,
}

/// Per-connection decoding state: the fragmented message in flight, and
/// how much of an incomplete text frame is already known to be valid.
#[derive(Debug, Default)]
pub struct Decoder {
    /// `Some` between the first and the final frame of a fragmented message.
    fragments: Option<Box<Fragments>>,
    /// `Some` while the front frame is text whose payload has not all arrived.
    partial: Option<Box<PartialText>>,
}

impl Decoder {
    /// A decoder with no message in flight.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Whether a fragmented message is in flight.
    pub fn in_message(&self) -> bool {
        self.fragments.is_some()
    }

    /// Decodes one frame from the front of `buf`.
    ///
    /// - `Ok(None)`: `buf` does not hold a whole frame yet; nothing consumed.
    /// - `Ok(Some((n, None)))`: a non-final fragment used `n` bytes.
    /// - `Ok(Some((n, Some(message))))`: `n` bytes made `message`.
    /// - `Err(e)`: the peer broke a rule; close with `e.close_code()`.
    ///
    /// The payload is unmasked in place inside `buf`.
    pub fn decode<'a>(
        &mut self,
        buf: &'a mut [u8],
        limits: &Limits,
    ) -> Result<Option<(usize, Option<Message<'a>>)>, WsError> {
        self.decode_with(buf, limits, None)
    }

    /// [`Decoder::decode`] on a connection that negotiated permessage-deflate
    /// when `inflater` is `Some`: compressed messages are inflated with it,
    /// and a message inflated there borrows its output buffer.
    pub fn decode_with<'a>(
        &mut self,
        buf: &'a mut [u8],
        limits: &Limits,
        inflater: Option<&'a mut Inflater>,
    ) -> Result<Option<(usize, Option<Message<'a>>)>, WsError> {
        let Some((header, header_len)) = Header::parse(buf)? else {
            return Ok(None);
        };
        // RSV1 only on the first frame of a data message, and only with the extension (RFC 7692 §6.1).
        let compressed = match (header.rsv, header.opcode) {
            (0, _) => false,
            (RSV1, OpCode::Data(Data::Text | Data::Binary)) if inflater.is_some() => true,
            _ => return Err(WsError::ReservedBits),
        };
        let compressed_message = compressed || self.fragments.as_ref().is_some_and(|f| f.compressed);
        match (limits.role, header.mask.is_some()) {
            (Role::Server, false) => return Err(WsError::UnmaskedFrame),
            (Role::Client, true) => return Err(WsError::MaskedFrame),
            _ => {}
        }
        // Size limits are enforced as soon as the header is known.
        // A compressed message's wire bytes may exceed its inflated size a little.
        let wire_limit =
            if compressed_message { deflate::compressed_limit(limits.max_message) } else { limits.max_message };
        let so_far = self.fragments.as_ref().map_or(0, |f| f.data.len() as u64);
        if header.payload_len.saturating_add(so_far) > wire_limit as u64 {
            if let OpCode::Data(_) = header.opcode {
                return Err(WsError::MessageTooBig);
            }
        }
        // Fragment sequencing errors are visible before the payload arrives too.
        match (header.opcode, self.fragments.is_some()) {
            (OpCode::Data(Data::Continue), false) => return Err(WsError::UnexpectedContinuation),
            (OpCode::Data(Data::Text | Data::Binary), true) => return Err(WsError::ExpectedContinuation),
            _ => {}
        }

        let len = header.payload_len as usize;
        let total = header_len + len;
        if buf.len() < total {
            if !compressed_message {
                self.check_partial_text(&header, &buf[header_len..])?;
            }
            return Ok(None);
        }
        self.partial = None;
        let payload = &mut buf[header_len..total];
        if let Some(mask) = header.mask {
            apply_mask(payload, mask);
        }
        let payload: &'a [u8] = payload;

        let message = match header.opcode {
            OpCode::Control(Control::Ping) => Some(Message::Ping(payload)),
            OpCode::Control(Control::Pong) => Some(Message::Pong(payload)),
            OpCode::Control(Control::Close) => Some(Message::Close(parse_close(payload)?)),
            OpCode::Data(op @ (Data::Text | Data::Binary)) if compressed && header.is_final => {
                let data = inflate(inflater, payload, limits.max_message)?;
                Some(data_message(op == Data::Text, data)?)
            }
            OpCode::Data(Data::Text) if header.is_final => {
                std::str::from_utf8(payload).map_err(|_| WsError::InvalidUtf8)?;
                Some(Message::Text(Payload::Borrowed(payload)))
            }
            OpCode::Data(Data::Binary) if header.is_final => Some(Message::Binary(Payload::Borrowed(payload))),
            OpCode::Data(Data::Text | Data::Binary) => {
                let is_text = header.opcode == OpCode::Data(Data::Text);
                let mut f = Box::new(Fragments { is_text, compressed, data: payload.to_vec(), utf8_checked: 0 });
                if is_text && !compressed {
                    check_utf8(&f.data, &mut f.utf8_checked, false)?;
                }
                self.fragments = Some(f);
                None
            }
            OpCode::Data(Data::Continue) => {
                // Checked above: a message is open.
                let f = self.fragments.as_mut().ok_or(WsError::UnexpectedContinuation)?;
                f.data.extend_from_slice(payload);
                if f.is_text && !f.compressed {
                    check_utf8(&f.data, &mut f.utf8_checked, header.is_final)?;
                }
                if header.is_final {
                    let f = self.fragments.take().ok_or(WsError::UnexpectedContinuation)?;
                    if f.compressed {
                        let data = inflate(inflater, &f.data, limits.max_message)?;
                        return Ok(Some((total, Some(data_message(f.is_text, data)?))));
                    }
                    Some(if f.is_text {
                        Message::Text(Payload::Owned(f.data))
                    } else {
                        Message::Binary(Payload::Owned(f.data))
                    })
                } else {
                    None
                }
            }
            // Reserved opcodes were rejected by Header::parse.
            OpCode::Data(Data::Reserved(op)) | OpCode::Control(Control::Reserved(op)) => {
                return Err(WsError::ReservedOpcode(op))
            }
        };
        Ok(Some((total, message)))
    }
}

impl Decoder {
    /// Fails fast on invalid UTF-8 in a text frame whose payload is still
    /// arriving: validates the part that is here (§8.1 "as soon as").
    /// The caller's buffer is not modified; new bytes are unmasked into a
    /// temporary copy, with a code point cut at the end carried over.
    fn check_partial_text(&mut self, header: &Header, available: &[u8]) -> Result<(), WsError> {
        let is_text = match header.opcode {
            OpCode::Data(Data::Text) => true,
            OpCode::Data(Data::Continue) => self.fragments.as_ref().is_some_and(|f| f.is_text),
            _ => false,
        };
        if !is_text {
            return Ok(());
        }
        let partial = self.partial.get_or_insert_with(|| {
            // A continuation starts with whatever code point the previous fragment cut.
            let mut p = PartialText::default();
            if let (OpCode::Data(Data::Continue), Some(f)) = (header.opcode, &self.fragments) {
                let tail = &f.data[f.utf8_checked..];
                p.carry[..tail.len()].copy_from_slice(tail);
                p.carry_len = tail.len();
            }
            Box::new(p)
        });
        if available.len() <= partial.checked {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(partial.carry_len + available.len() - partial.checked);
        bytes.extend_from_slice(&partial.carry[..partial.carry_len]);
        let start = bytes.len();
        bytes.extend_from_slice(&available[partial.checked..]);
        if let Some(mask) = header.mask {
            // Rotate the key so it lines up with payload offset `checked`.
            let r = partial.checked % 4;
            apply_mask(&mut bytes[start..], [mask[r], mask[(r + 1) % 4], mask[(r + 2) % 4], mask[(r + 3) % 4]]);
        }
        let valid = match std::str::from_utf8(&bytes) {
            Ok(_) => bytes.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => return Err(WsError::InvalidUtf8),
        };
        let tail = &bytes[valid..];
        partial.carry[..tail.len()].copy_from_slice(tail);
        partial.carry_len = tail.len();
        partial.checked = available.len();
        Ok(())
    }
}

/// Inflates a compressed message (the inflater is there: RSV1 was accepted only with one).
fn inflate<'a>(inflater: Option<&'a mut Inflater>, data: &[u8], max: usize) -> Result<&'a [u8], WsError> {
    inflater.ok_or(WsError::ReservedBits)?.inflate(data, max)
}

/// A whole inflated message, its text validated.
fn data_message(is_text: bool, data: &[u8]) -> Result<Message<'_>, WsError> {
    if is_text {
        std::str::from_utf8(data).map_err(|_| WsError::InvalidUtf8)?;
        Ok(Message::Text(Payload::Borrowed(data)))
    } else {
        Ok(Message::Binary(Payload::Borrowed(data)))
    }
}

/// Validates `data[*checked..]`, advancing `checked` over complete code
/// points. An incomplete code point at the end is allowed unless `is_final`.
fn check_utf8(data: &[u8], checked: &mut usize, is_final: bool) -> Result<(), WsError> {
    match std::str::from_utf8(&data[*checked..]) {
        Ok(_) => {
            *checked = data.len();
            Ok(())
        }
        // error_len() == None: the input ends in the middle of a code point.
        Err(e) if e.error_len().is_none() && !is_final => {
            *checked += e.valid_up_to();
            Ok(())
        }
        Err(_) => Err(WsError::InvalidUtf8),
    }
}

/// Reads a close payload (§5.5.1): empty, or a 2-byte code and a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Option<(u16, &str)>, WsError> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(WsError::InvalidClosePayload),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_close_code(code) {
                return Err(WsError::InvalidCloseCode(code));
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| WsError::InvalidCloseReason)?;
            Ok(Some((code, reason)))
        }
    }
}

/// Whether `code` may appear in a close frame (§7.4.1, §7.4.2).
pub fn is_valid_close_code(code: u16) -> bool {
    CloseCode::from(code).is_allowed()
}

#[cfg(test)]
#[path = "decoder_tests.rs"]
mod tests;
