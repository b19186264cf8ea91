//! An HTTP/1.1 request head, parsed with httparse straight from a
//! connection's read buffer. Partial input is `Ok(None)`: httparse reports
//! `Partial` for every prefix of a valid head, so no `\r\n\r\n` pre-scan is
//! needed, and only genuinely malformed bytes are errors (answered with 400
//! at once). The size limit is checked on partial input too, so a client
//! cannot make the server buffer an endless head.

use std::fmt;

use super::header::{has_token, trim};

/// Headers httparse may record; more is answered with 431.
const MAX_HEADERS: usize = 48;

/// Why a request head was refused; each maps to one status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x, or bytes httparse rejects: 400.
    Malformed,
    /// The head is longer than the limit, or has too many headers: 431.
    TooLarge,
}

impl HeadError {
    /// The status code this error is answered with.
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed => 400,
            HeadError::TooLarge => 431,
        }
    }
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeadError::Malformed => "malformed request",
            HeadError::TooLarge => "request head too large",
        })
    }
}

/// The parts of a request head the server acts on, borrowed from the buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head<'b> {
    /// Request method, e.g. `GET`.
    pub method: &'b str,
    /// Path without the query.
    pub path: &'b str,
    /// The query string without `?` (empty if none).
    pub query: &'b str,
    /// HTTP minor version: 0 or 1.
    pub minor_version: u8,
    /// Bytes of the head, including the final blank line.
    pub len: usize,
    /// `Host`.
    pub host: Option<&'b [u8]>,
    /// `Upgrade` contains the token `websocket`.
    pub upgrade_websocket: bool,
    /// `Connection` contains the token `upgrade`.
    pub connection_upgrade: bool,
    /// `Connection` contains `close`.
    pub connection_close: bool,
    /// `Connection` contains `keep-alive`.
    pub connection_keep_alive: bool,
    /// `Sec-WebSocket-Key`.
    pub ws_key: Option<&'b [u8]>,
    /// `Sec-WebSocket-Version`.
    pub ws_version: Option<&'b [u8]>,
    /// `Origin`.
    pub origin: Option<&'b [u8]>,
    /// `Authorization` (never logged).
    pub authorization: Option<&'b [u8]>,
    /// What `Sec-WebSocket-Extensions` offered (every such header, in order).
    pub extensions: super::extensions::Offers,
    /// A body follows (`Content-Length` > 0 or `Transfer-Encoding`).
    pub has_body: bool,
}

impl Head<'_> {
    /// Whether the connection may serve another request after this one.
    pub fn keep_alive(&self) -> bool {
        !self.has_body && !self.connection_close && (self.minor_version == 1 || self.connection_keep_alive)
    }
}

/// Parses the request head at the front of `buf`.
pub fn parse_head(buf: &[u8], max_len: usize) -> Result<Option<Head<'_>>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() > max_len { Err(HeadError::TooLarge) } else { Ok(None) };
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::Malformed),
    };
    if len > max_len {
        return Err(HeadError::TooLarge);
    }
    let target = req.path.ok_or(HeadError::Malformed)?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut head = Head {
        method: req.method.ok_or(HeadError::Malformed)?,
        path,
        query,
        minor_version: req.version.ok_or(HeadError::Malformed)?,
        len,
        ..Head::default()
    };
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            head.host = Some(h.value);
        } else if name.eq_ignore_ascii_case("upgrade") {
            head.upgrade_websocket |= has_token(h.value, "websocket");
        } else if name.eq_ignore_ascii_case("connection") {
            head.connection_upgrade |= has_token(h.value, "upgrade");
            head.connection_close |= has_token(h.value, "close");
            head.connection_keep_alive |= has_token(h.value, "keep-alive");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            head.ws_key = Some(h.value);
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            head.ws_version = Some(h.value);
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(h.value);
        } else if name.eq_ignore_ascii_case("authorization") {
            head.authorization = Some(h.value);
        } else if name.eq_ignore_ascii_case("sec-websocket-extensions") {
            head.extensions.offer(h.value);
        } else if name.eq_ignore_ascii_case("content-length") {
            head.has_body |= trim(h.value) != b"0";
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            head.has_body = true;
        }
    }
    Ok(Some(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPGRADE: &[u8] = b"GET /ws?room=a&name=b HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\n\
        Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\nOrigin: http://x\r\n\r\n";

    #[test]
    fn parses_an_upgrade_request() {
        let head = parse_head(UPGRADE, 8192).unwrap().unwrap();
        assert_eq!((head.method, head.path, head.query), ("GET", "/ws", "room=a&name=b"));
        assert!(head.upgrade_websocket && head.connection_upgrade && head.connection_keep_alive);
        assert_eq!(head.ws_key, Some(&b"dGhlIHNhbXBsZSBub25jZQ=="[..]));
        assert_eq!(head.ws_version, Some(&b"13"[..]));
        assert_eq!(head.origin, Some(&b"http://x"[..]));
        assert_eq!(head.extensions.deflate, None);
        assert_eq!(head.len, UPGRADE.len());
        assert!(head.keep_alive());
    }

    #[test]
    fn extension_offers_are_read_from_every_header() {
        let raw = b"GET /ws HTTP/1.1\r\nSec-WebSocket-Extensions: permessage-deflate; foo\r\nHost: x\r\n\
            sec-websocket-extensions: permessage-deflate; server_max_window_bits=10\r\n\r\n";
        let head = parse_head(raw, 8192).unwrap().unwrap();
        assert_eq!(head.extensions.declined, 1);
        assert_eq!(head.extensions.deflate.and_then(|a| a.server_max_window_bits), Some(10));
    }

    #[test]
    fn every_prefix_is_partial_not_an_error() {
        for cut in 0..UPGRADE.len() {
            assert_eq!(parse_head(&UPGRADE[..cut], 8192), Ok(None), "cut {cut}");
        }
    }

    #[test]
    fn size_limit_applies_to_partial_and_complete_heads() {
        let long = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 600]].concat();
        assert_eq!(parse_head(&long, 512), Err(HeadError::TooLarge));
        assert_eq!(parse_head(UPGRADE, 100), Err(HeadError::TooLarge));
        let many: Vec<u8> = [b"GET / HTTP/1.1\r\n".to_vec(), b"A: b\r\n".repeat(60), b"\r\n".to_vec()].concat();
        assert_eq!(parse_head(&many, 8192), Err(HeadError::TooLarge));
    }

    #[test]
    fn malformed_bytes_are_rejected() {
        assert_eq!(parse_head(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 8192), Err(HeadError::Malformed));
        assert_eq!(parse_head(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 8192), Err(HeadError::Malformed));
        assert_eq!(parse_head(b"GET / HTTP/2.0\r\n\r\n", 8192), Err(HeadError::Malformed));
    }

    #[test]
    fn keep_alive_rules() {
        let h = |s: &'static [u8]| parse_head(s, 8192).unwrap().unwrap();
        assert!(h(b"GET / HTTP/1.1\r\n\r\n").keep_alive());
        assert!(!h(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive());
        assert!(!h(b"GET / HTTP/1.0\r\n\r\n").keep_alive());
        assert!(h(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive());
        assert!(!h(b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\n").keep_alive());
    }
}
