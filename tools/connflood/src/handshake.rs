//! The client side of the HTTP upgrade (RFC 6455 §4.1): the request, built
//! from a per-URL template computed once (only room, name, `since` and the
//! key differ per connection), and the check of the server's answer,
//! including `Sec-WebSocket-Accept`.
//!
//! Keys are derived from (seed, connection, attempt), so nothing about a
//! pending handshake is stored: the expected accept value is recomputed
//! from the same inputs when the answer arrives.

use std::fmt;

use crate::rng::mix;
use crate::url::WsUrl;

/// The longest response head accepted.
pub const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// The constant parts of one URL's upgrade request.
#[derive(Debug, Clone)]
pub struct Template {
    /// `GET /path?query&room=`
    head: Vec<u8>,
    /// ` HTTP/1.1` and every header up to `Sec-WebSocket-Key: `
    tail: Vec<u8>,
}

impl Template {
    /// The template for `url`; with `deflate`, the request offers
    /// permessage-deflate the way browsers do.
    pub fn new(url: &WsUrl, deflate: bool) -> Template {
        let mut head = format!("GET {}?", url.path).into_bytes();
        if !url.query.is_empty() {
            head.extend_from_slice(url.query.as_bytes());
            head.push(b'&');
        }
        head.extend_from_slice(b"room=");
        let tail = format!(
            " HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nUser-Agent: connflood\r\n{}Sec-WebSocket-Key: ",
            url.host_header(),
            if deflate { "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" } else { "" }
        )
        .into_bytes();
        Template { head, tail }
    }

    /// Appends the request for one attempt to `out`.
    pub fn write(
        &self,
        out: &mut Vec<u8>,
        room: &str,
        name: &str,
        since: Option<u64>,
        token: Option<&str>,
        key: &[u8; 24],
    ) {
        out.extend_from_slice(&self.head);
        out.extend_from_slice(room.as_bytes());
        out.extend_from_slice(b"&name=");
        out.extend_from_slice(name.as_bytes());
        if let Some(s) = since {
            out.extend_from_slice(b"&since=");
            out.extend_from_slice(s.to_string().as_bytes());
        }
        if let Some(t) = token {
            // base64url and dots: nothing to escape in a query.
            out.extend_from_slice(b"&token=");
            out.extend_from_slice(t.as_bytes());
        }
        out.extend_from_slice(&self.tail);
        out.extend_from_slice(key);
        out.extend_from_slice(b"\r\n\r\n");
    }
}

/// The `Sec-WebSocket-Key` of one attempt: base64 of 16 bytes derived
/// from the run's seed, the connection and the attempt number.
pub fn key_for(seed: u64, conn: u32, attempt: u32) -> [u8; 24] {
    let a = mix(seed ^ ((conn as u64) << 32 | attempt as u64));
    let b = mix(a ^ 0x5851_f42d_4c95_7f2d);
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&a.to_le_bytes());
    raw[8..].copy_from_slice(&b.to_le_bytes());
    base64_16(&raw)
}

/// Standard base64 (with padding) of 16 bytes: always 24 characters.
pub fn base64_16(raw: &[u8; 16]) -> [u8; 24] {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = [b'='; 24];
    for (i, chunk) in raw.chunks(3).enumerate() {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (j, &b)| acc | (b as u32) << (16 - 8 * j));
        let chars = chunk.len() + 1;
        for k in 0..chars {
            out[i * 4 + k] = ALPHABET[((n >> (18 - 6 * k)) & 63) as usize];
        }
    }
    out
}

/// What was wrong with the server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not an HTTP/1.x response head.
    Malformed,
    /// No end of the head within [`MAX_RESPONSE_HEAD`] bytes.
    TooLarge,
    /// A status other than 101, with `Retry-After` seconds if given.
    Status(u16, Option<u64>),
    /// 101 without `Upgrade: websocket` and `Connection: upgrade`.
    NotUpgraded,
    /// `Sec-WebSocket-Accept` missing or not the one the key calls for.
    BadAccept,
}

impl HandshakeError {
    /// A short label for counting.
    pub fn label(&self) -> String {
        match self {
            HandshakeError::Malformed => "bad_response".into(),
            HandshakeError::TooLarge => "response_too_large".into(),
            HandshakeError::Status(s, _) => format!("http_{s}"),
            HandshakeError::NotUpgraded => "not_upgraded".into(),
            HandshakeError::BadAccept => "bad_accept".into(),
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<'a> {
    /// The status code.
    pub status: u16,
    /// `Sec-WebSocket-Accept`, if present.
    pub accept: Option<&'a str>,
    /// `Upgrade` names `websocket`.
    pub upgrade: bool,
    /// `Connection` has the `upgrade` token.
    pub connection_upgrade: bool,
    /// `Retry-After`, in seconds, if present and numeric.
    pub retry_after: Option<u64>,
    /// `Sec-WebSocket-Extensions` agreed to permessage-deflate.
    pub deflate: bool,
}

/// Parses the response head at the front of `buf`: `Ok(None)` while it is
/// incomplete, else the head's length and its content.
pub fn parse_response(buf: &[u8]) -> Result<Option<(usize, Response<'_>)>, HandshakeError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_RESPONSE_HEAD {
            return Err(HandshakeError::TooLarge);
        }
        if buf.len() >= 5 && !buf.starts_with(b"HTTP/") {
            return Err(HandshakeError::Malformed);
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| HandshakeError::Malformed)?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(HandshakeError::Malformed);
    }
    let status =
        parts.next().filter(|s| s.len() == 3).and_then(|s| s.parse::<u16>().ok()).ok_or(HandshakeError::Malformed)?;
    let mut resp =
        Response { status, accept: None, upgrade: false, connection_upgrade: false, retry_after: None, deflate: false };
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(HandshakeError::Malformed)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("sec-websocket-accept") {
            resp.accept = Some(value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            resp.upgrade = value.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            resp.connection_upgrade = value.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            resp.deflate |=
                value.split(';').next().is_some_and(|e| e.trim().eq_ignore_ascii_case("permessage-deflate"));
        } else if name.eq_ignore_ascii_case("retry-after") {
            resp.retry_after = value.parse().ok();
        }
    }
    Ok(Some((end + 4, resp)))
}

/// Checks a parsed response against the key that was sent.
pub fn check(resp: &Response<'_>, key: &[u8; 24]) -> Result<(), HandshakeError> {
    if resp.status != 101 {
        return Err(HandshakeError::Status(resp.status, resp.retry_after));
    }
    if !resp.upgrade || !resp.connection_upgrade {
        return Err(HandshakeError::NotUpgraded);
    }
    match resp.accept {
        Some(a) if a == tungstenite::handshake::derive_accept_key(key) => Ok(()),
        _ => Err(HandshakeError::BadAccept),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_example() {
        // RFC 6455 §4.1 shows the nonce 0x01..0x10 as "...PEC==", which is not
        // canonical base64; decoders (and servers) read the canonical "...PEA==".
        let raw: [u8; 16] = std::array::from_fn(|i| i as u8 + 1);
        assert_eq!(&base64_16(&raw), b"AQIDBAUGBwgJCgsMDQ4PEA==");
        assert_eq!(&base64_16(&[0xff; 16]), b"/////////////////////w==");
        assert_eq!(&base64_16(&[0; 16]), b"AAAAAAAAAAAAAAAAAAAAAA==");
    }

    #[test]
    fn keys_differ_per_attempt_and_are_reproducible() {
        assert_eq!(key_for(1, 2, 3), key_for(1, 2, 3));
        assert_ne!(key_for(1, 2, 3), key_for(1, 2, 4));
        assert_ne!(key_for(1, 2, 3), key_for(1, 3, 3));
        assert_ne!(key_for(1, 2, 3), key_for(2, 2, 3));
    }

    #[test]
    fn request_has_every_required_header() {
        let url = WsUrl::parse("ws://127.0.0.1:8080/ws?token=t&room=ignored").unwrap();
        let key = key_for(0, 0, 0);
        let mut out = Vec::new();
        Template::new(&url, false).write(&mut out, "cf-3", "cf-ab-7", Some(42), None, &key);
        let text = String::from_utf8(out).unwrap();
        let expected = format!(
            "GET /ws?token=t&room=cf-3&name=cf-ab-7&since=42 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\
             Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             User-Agent: connflood\r\nSec-WebSocket-Key: {}\r\n\r\n",
            std::str::from_utf8(&key).unwrap()
        );
        assert_eq!(text, expected);
        let mut out = Vec::new();
        Template::new(&WsUrl::parse("ws://h").unwrap(), false).write(&mut out, "r", "n", None, Some("a.b.c"), &key);
        assert!(out.starts_with(b"GET /?room=r&name=n&token=a.b.c HTTP/1.1\r\nHost: h\r\n"));
        let mut offer = Vec::new();
        Template::new(&WsUrl::parse("ws://h").unwrap(), true).write(&mut offer, "r", "n", None, None, &key);
        let offer = String::from_utf8(offer).unwrap();
        assert!(offer.contains("\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"));
        let head = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: permessage-deflate; \
            server_no_context_takeover\r\n\r\n";
        assert!(parse_response(head).unwrap().unwrap().1.deflate);
    }

    #[test]
    fn accepts_the_rfc_handshake() {
        // RFC 6455 §1.3's example key and accept value.
        let key = *b"dGhlIHNhbXBsZSBub25jZQ==";
        let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi";
        let (n, r) = parse_response(resp).unwrap().unwrap();
        assert_eq!(&resp[n..], b"\x81\x02hi");
        assert_eq!(check(&r, &key), Ok(()));
        let mut other = key;
        other[0] = b'e';
        assert_eq!(check(&r, &other), Err(HandshakeError::BadAccept));
    }

    #[test]
    fn incomplete_and_refused_answers() {
        let full = b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\n";
        for cut in 0..full.len() {
            assert_eq!(parse_response(&full[..cut]), Ok(None), "cut {cut}");
        }
        let (_, r) = parse_response(full).unwrap().unwrap();
        assert_eq!(check(&r, &key_for(0, 0, 0)), Err(HandshakeError::Status(503, Some(5))));
        assert_eq!(HandshakeError::Status(503, Some(5)).label(), "http_503");
        assert_eq!(parse_response(b"SSH-2.0-x\r\n"), Err(HandshakeError::Malformed));
        assert_eq!(parse_response(b"HTTP/1.1 abc\r\n\r\n"), Err(HandshakeError::Malformed));
        assert_eq!(parse_response(b"HTTP/1.1 101 OK\r\nbroken\r\n\r\n"), Err(HandshakeError::Malformed));
        assert_eq!(parse_response(&[b'H'; MAX_RESPONSE_HEAD + 1][..]), Err(HandshakeError::TooLarge));
        let (_, r) = parse_response(b"HTTP/1.1 101 OK\r\nConnection: keep-alive\r\n\r\n").unwrap().unwrap();
        assert_eq!(check(&r, &key_for(0, 0, 0)), Err(HandshakeError::NotUpgraded));
        let (_, r) =
            parse_response(b"HTTP/1.1 101 OK\r\nUPGRADE: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\r\n")
                .unwrap()
                .unwrap();
        assert!(r.upgrade && r.connection_upgrade && r.accept.is_none());
        assert_eq!(check(&r, &key_for(0, 0, 0)), Err(HandshakeError::BadAccept));
    }
}
