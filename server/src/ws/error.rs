//! Every WebSocket rule a peer can break, each mapped to exactly one close
//! code (the wire answer) and one metric label.

use std::fmt;

/// A violation found while decoding a peer's frames. The connection is
/// closed with [`WsError::close_code`]; nothing after it is processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WsError {
    /// "RSV1, RSV2, RSV3: MUST be 0 unless an extension is negotiated" (§5.2).
    ReservedBits,
    /// "If an unknown opcode is received, the receiving endpoint MUST _Fail the WebSocket Connection_" (§5.2).
    ReservedOpcode(u8),
    /// "The server MUST close the connection upon receiving a frame that is not masked" (§5.1).
    UnmaskedFrame,
    /// "A client MUST close a connection if it detects a masked frame" (§5.1).
    MaskedFrame,
    /// "All control frames MUST have a payload length of 125 bytes or less" (§5.5).
    ControlFrameTooBig,
    /// "Control frames … MUST NOT be fragmented" (§5.5).
    FragmentedControlFrame,
    /// A continuation frame with no message open (§5.4).
    UnexpectedContinuation,
    /// A new data frame while a fragmented message is open (§5.4).
    ExpectedContinuation,
    /// "the most significant bit MUST be 0" of a 64-bit length (§5.2).
    InvalidLength,
    /// A close payload of exactly one byte (§5.5.1).
    InvalidClosePayload,
    /// A close code that may not be sent on the wire (§7.4).
    InvalidCloseCode(u16),
    /// Text that is not UTF-8, detected at the first bad byte (§8.1).
    InvalidUtf8,
    /// A close reason that is not UTF-8 (§5.5.1).
    InvalidCloseReason,
    /// A message or frame larger than the configured limit (for a
    /// compressed message: its inflated size).
    MessageTooBig,
    /// A compressed message (RFC 7692) whose payload is not valid DEFLATE data.
    InvalidCompressedData,
}

impl WsError {
    /// The close code this violation is answered with.
    pub fn close_code(self) -> u16 {
        match self {
            WsError::InvalidUtf8 | WsError::InvalidCloseReason => 1007,
            WsError::MessageTooBig => 1009,
            _ => 1002,
        }
    }

    /// The label under which it is counted in `/metrics`.
    pub fn metric_label(self) -> &'static str {
        match self.close_code() {
            1007 => "invalid_utf8",
            1009 => "too_big",
            _ => "protocol",
        }
    }
}

impl fmt::Display for WsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WsError::ReservedBits => f.write_str("reserved bits set"),
            WsError::ReservedOpcode(op) => write!(f, "reserved opcode {op}"),
            WsError::UnmaskedFrame => f.write_str("unmasked client frame"),
            WsError::MaskedFrame => f.write_str("masked server frame"),
            WsError::ControlFrameTooBig => f.write_str("control frame over 125 bytes"),
            WsError::FragmentedControlFrame => f.write_str("fragmented control frame"),
            WsError::UnexpectedContinuation => f.write_str("continuation without a message"),
            WsError::ExpectedContinuation => f.write_str("new message inside a fragmented one"),
            WsError::InvalidLength => f.write_str("invalid payload length"),
            WsError::InvalidClosePayload => f.write_str("one-byte close payload"),
            WsError::InvalidCloseCode(code) => write!(f, "invalid close code {code}"),
            WsError::InvalidUtf8 => f.write_str("invalid UTF-8 in text"),
            WsError::InvalidCloseReason => f.write_str("invalid UTF-8 in close reason"),
            WsError::MessageTooBig => f.write_str("message too big"),
            WsError::InvalidCompressedData => f.write_str("invalid compressed data"),
        }
    }
}

impl std::error::Error for WsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_small_so_results_stay_cheap() {
        assert!(std::mem::size_of::<WsError>() <= 4);
    }

    #[test]
    fn each_kind_maps_to_its_rfc_close_code() {
        assert_eq!(WsError::ReservedBits.close_code(), 1002);
        assert_eq!(WsError::InvalidCloseCode(999).close_code(), 1002);
        assert_eq!(WsError::InvalidUtf8.close_code(), 1007);
        assert_eq!(WsError::InvalidCloseReason.close_code(), 1007);
        assert_eq!(WsError::MessageTooBig.close_code(), 1009);
        assert_eq!(WsError::InvalidCompressedData.close_code(), 1002);
    }
}
