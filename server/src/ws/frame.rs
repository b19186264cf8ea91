//! One frame header (RFC 6455 §5.2): parsed from the front of a byte slice
//! without consuming anything on short input, or formatted into a buffer.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-------+-+-------------+-------------------------------+
//! |F|R|R|R| opcode|M| Payload len |    Extended payload length    |
//! |I|S|S|S|  (4)  |A|     (7)     |             (16/64)           |
//! |N|V|V|V|       |S|             |   (if payload len==126/127)   |
//! | |1|2|3|       |K|             |                               |
//! +-+-+-+-+-------+-+-------------+ - - - - - - - - - - - - - - - +
//! ```

use super::error::WsError;
use super::{Control, OpCode};

/// The longest header: 2 bytes, 8 bytes of length, 4 bytes of mask.
pub const MAX_HEADER_LEN: usize = 14;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// FIN: this is the final fragment of a message.
    pub is_final: bool,
    /// RSV1..RSV3 as the low three bits (0 unless an extension is negotiated).
    pub rsv: u8,
    /// The frame's opcode; reserved opcodes are values, not panics.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

impl Header {
    /// Parses the header at the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold the whole header
    /// (nothing is consumed), `Ok(Some((header, header_len)))` otherwise.
    /// Only rules visible in the header itself are checked here (reserved
    /// opcodes, control frame size and fragmentation, length encoding);
    /// the decoder checks the rules that depend on the connection.
    pub fn parse(buf: &[u8]) -> Result<Option<(Header, usize)>, WsError> {
        if buf.len() < 2 {
            return Ok(None);
        }
        let (b0, b1) = (buf[0], buf[1]);
        let is_final = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0x07;
        let opcode = OpCode::from(b0 & 0x0f);
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7f;

        if let OpCode::Data(super::Data::Reserved(op)) | OpCode::Control(Control::Reserved(op)) = opcode {
            return Err(WsError::ReservedOpcode(op));
        }
        if let OpCode::Control(_) = opcode {
            // "All control frames MUST have a payload length of 125 bytes or less
            //  and MUST NOT be fragmented."
            if len7 > 125 {
                return Err(WsError::ControlFrameTooBig);
            }
            if !is_final {
                return Err(WsError::FragmentedControlFrame);
            }
        }

        let (payload_len, mut pos) = match len7 {
            126 => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                (u16::from_be_bytes([buf[2], buf[3]]) as u64, 4)
            }
            127 => {
                if buf.len() < 10 {
                    return Ok(None);
                }
                let mut b = [0u8; 8];
                b.copy_from_slice(&buf[2..10]);
                let len = u64::from_be_bytes(b);
                // "the most significant bit MUST be 0"
                if len >> 63 != 0 {
                    return Err(WsError::InvalidLength);
                }
                (len, 10)
            }
            n => (n as u64, 2),
        };
        let mask = if masked {
            if buf.len() < pos + 4 {
                return Ok(None);
            }
            let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
            pos += 4;
            Some(m)
        } else {
            None
        };
        Ok(Some((Header { is_final, rsv, opcode, mask, payload_len }, pos)))
    }

    /// Writes this header into `out` and returns its length.
    pub fn format(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.is_final) << 7) | ((self.rsv & 7) << 4) | u8::from(self.opcode);
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut pos = if self.payload_len < 126 {
            out[1] = mask_bit | self.payload_len as u8;
            2
        } else if self.payload_len <= u16::MAX as u64 {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
            4
        } else {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&self.payload_len.to_be_bytes());
            10
        };
        if let Some(m) = self.mask {
            out[pos..pos + 4].copy_from_slice(&m);
            pos += 4;
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::Data;

    fn header(opcode: OpCode, len: u64, mask: Option<[u8; 4]>) -> Header {
        Header { is_final: true, rsv: 0, opcode, mask, payload_len: len }
    }

    #[test]
    fn round_trips_every_length_encoding() {
        for len in [0u64, 1, 125, 126, 127, 65_535, 65_536, 1 << 32, (1 << 63) - 1] {
            for mask in [None, Some([9, 8, 7, 6])] {
                let h = header(OpCode::Data(Data::Binary), len, mask);
                let mut out = [0u8; MAX_HEADER_LEN];
                let n = h.format(&mut out);
                assert_eq!(Header::parse(&out[..n]), Ok(Some((h, n))), "len {len}");
                // Every strict prefix is "incomplete", never an error or a wrong header.
                for cut in 0..n {
                    assert_eq!(Header::parse(&out[..cut]), Ok(None), "len {len} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn parses_the_rfc_examples() {
        // §5.7: a single-frame unmasked text message "Hello".
        let (h, n) = Header::parse(&[0x81, 0x05, 0x48, 0x65]).unwrap().unwrap();
        assert_eq!((h.is_final, h.opcode, h.payload_len, h.mask, n), (true, OpCode::Data(Data::Text), 5, None, 2));
        // §5.7: a masked "Hello".
        let (h, n) = Header::parse(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d]).unwrap().unwrap();
        assert_eq!((h.mask, n), (Some([0x37, 0xfa, 0x21, 0x3d]), 6));
        // §5.7: 256 bytes binary in a single unmasked frame.
        let (h, n) = Header::parse(&[0x82, 0x7e, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.payload_len, n), (256, 4));
    }

    #[test]
    fn rejects_what_the_header_alone_shows_is_wrong() {
        assert_eq!(Header::parse(&[0x83, 0x00]), Err(WsError::ReservedOpcode(3)));
        assert_eq!(Header::parse(&[0x8b, 0x00]), Err(WsError::ReservedOpcode(11)));
        assert_eq!(Header::parse(&[0x89, 0x7e]), Err(WsError::ControlFrameTooBig));
        assert_eq!(Header::parse(&[0x09, 0x00]), Err(WsError::FragmentedControlFrame));
        let mut huge = [0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(Header::parse(&huge), Err(WsError::InvalidLength));
        huge[2] = 0x7f;
        assert!(Header::parse(&huge).unwrap().is_some());
    }

    #[test]
    fn keeps_rsv_bits_for_the_decoder_to_judge() {
        let (h, _) = Header::parse(&[0xf1, 0x00]).unwrap().unwrap();
        assert_eq!(h.rsv, 0b111);
    }
}
