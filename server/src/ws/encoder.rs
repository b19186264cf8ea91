//! Messages → frame bytes. A frame is built once, whole (header and
//! payload in one allocation), so a broadcast can share it between every
//! recipient as an `Arc<[u8]>`.

use super::frame::{Header, MAX_HEADER_LEN};
use super::mask::apply_mask;
use super::{Control, OpCode};

/// An unmasked, final frame (what a server sends).
pub fn frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    frame_with_mask(opcode, payload, None)
}

/// A final frame, masked with `mask` when given (what a client sends).
pub fn frame_with_mask(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    frame_with(opcode, 0, payload, mask)
}

/// RSV1: the frame starts a compressed message (RFC 7692 §6), as a `rsv` value.
pub const RSV1: u8 = 0b100;

/// A final data frame of one compressed message: `payload` is compressed
/// with [`super::deflate`] and the frame carries RSV1. One allocation, of
/// exactly the frame's size.
pub fn compressed_frame(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    compressed_frame_into(opcode, payload, mask, &mut out);
    out
}

/// [`compressed_frame`], appended to `out` (a reused buffer: no allocation
/// once it is large enough). Returns whether the frame is compressed: it is
/// sent uncompressed (RSV1 clear, allowed per message) if compression could
/// not complete.
pub fn compressed_frame_into(opcode: OpCode, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) -> bool {
    let compressed = super::deflate::with_compressed(payload, |z| frame_into(opcode, RSV1, z, mask, out)).is_some();
    if !compressed {
        frame_into(opcode, 0, payload, mask, out);
    }
    compressed
}

/// A final frame with the reserved bits `rsv` (low three bits: RSV1..RSV3).
pub fn frame_with(opcode: OpCode, rsv: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut out = Vec::new();
    frame_into(opcode, rsv, payload, mask, &mut out);
    out
}

/// [`frame_with`], appended to `out`; an empty `out` is allocated at
/// exactly the frame's size.
pub fn frame_into(opcode: OpCode, rsv: u8, payload: &[u8], mask: Option<[u8; 4]>, out: &mut Vec<u8>) {
    let header = Header { is_final: true, rsv, opcode, mask, payload_len: payload.len() as u64 };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = header.format(&mut head);
    out.reserve_exact(n + payload.len());
    out.extend_from_slice(&head[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(m) = mask {
        apply_mask(&mut out[start..], m);
    }
}

/// The length of the header [`frame`] puts in front of a payload of `len` bytes.
pub fn header_len(len: usize, masked: bool) -> usize {
    let base = if len < 126 {
        2
    } else if len <= u16::MAX as usize {
        4
    } else {
        10
    };
    base + if masked { 4 } else { 0 }
}

/// A close frame's payload: the code, then as much of `reason` as fits in
/// 123 bytes without splitting a character.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

/// An unmasked close frame with `code` and `reason`.
pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    frame(OpCode::Control(Control::Close), &close_payload(code, reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::Data;

    #[test]
    fn frames_match_the_rfc_examples() {
        assert_eq!(frame(OpCode::Data(Data::Text), b"Hello"), [0x81, 0x05, b'H', b'e', b'l', b'l', b'o']);
        assert_eq!(
            frame_with_mask(OpCode::Data(Data::Text), b"Hello", Some([0x37, 0xfa, 0x21, 0x3d])),
            [0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58]
        );
        assert_eq!(&frame(OpCode::Data(Data::Binary), &[0; 256])[..4], [0x82, 0x7e, 0x01, 0x00]);
        assert_eq!(&frame(OpCode::Data(Data::Binary), &[0; 65536])[..10], [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    #[test]
    fn compressed_frames_carry_rsv1_and_inflate_back() {
        let text = "hello hello hello hello";
        let f = compressed_frame(OpCode::Data(Data::Text), text.as_bytes(), None);
        assert_eq!(f[0], 0xc1, "FIN, RSV1, text");
        let z = &f[2..];
        assert!(z.len() < text.len());
        assert_eq!(crate::ws::Inflater::new().inflate(z, 100).unwrap(), text.as_bytes());
    }

    #[test]
    fn frames_appended_to_a_buffer_are_the_same_bytes() {
        let text = "hello hello hello hello";
        let mut out = b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec();
        let head = out.len();
        assert!(compressed_frame_into(OpCode::Data(Data::Text), text.as_bytes(), None, &mut out));
        assert_eq!(out[head..], compressed_frame(OpCode::Data(Data::Text), text.as_bytes(), None));
        let masked = out.len();
        frame_into(OpCode::Data(Data::Text), 0, b"Hello", Some([0x37, 0xfa, 0x21, 0x3d]), &mut out);
        assert_eq!(out[masked..], frame_with_mask(OpCode::Data(Data::Text), b"Hello", Some([0x37, 0xfa, 0x21, 0x3d])));
        // A frame built alone is one allocation of exactly its size.
        let f = frame(OpCode::Control(Control::Ping), b"");
        assert_eq!((f.len(), f.capacity()), (2, 2));
    }

    #[test]
    fn header_len_agrees_with_frame() {
        for len in [0, 125, 126, 65_535, 65_536] {
            assert_eq!(frame(OpCode::Data(Data::Binary), &vec![0; len]).len(), header_len(len, false) + len);
        }
    }

    #[test]
    fn close_reason_is_truncated_on_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let p = close_payload(1001, &reason);
        assert!(p.len() <= 125);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
        assert_eq!(&p[..2], &1001u16.to_be_bytes());
    }
}
