//! HTTP/1.1 responses, built whole into one buffer and queued on the
//! connection like any other outbound bytes.

use std::io::Write;

/// The reason phrase for a status code the server sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// A response under construction.
#[derive(Debug)]
pub struct Response {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Response {
    /// A response with `status` and an empty body.
    pub fn new(status: u16) -> Response {
        Response { status, headers: Vec::new(), body: Vec::new() }
    }

    /// A plain-text response: the reason phrase or `text`, and a newline.
    pub fn text(status: u16, text: &str) -> Response {
        let body = if text.is_empty() { reason(status) } else { text };
        Response::new(status).header("Content-Type", "text/plain; charset=utf-8").body(format!("{body}\n"))
    }

    /// A JSON response.
    pub fn json(status: u16, json: String) -> Response {
        Response::new(status).header("Content-Type", "application/json").header("Cache-Control", "no-store").body(json)
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Adds a header.
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// Bytes of the body.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// The bytes on the wire. `keep_alive` picks the `Connection` header;
    /// `head_only` leaves the body out (a HEAD request) but keeps its length.
    pub fn into_bytes(self, keep_alive: bool, head_only: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.body.len());
        self.write_to(keep_alive, head_only, &mut out);
        out
    }

    /// [`into_bytes`](Self::into_bytes), appended to `out` (a reused buffer).
    pub fn write_to(self, keep_alive: bool, head_only: bool, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail.
        let _ = write!(out, "HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        for (name, value) in &self.headers {
            let _ = write!(out, "{name}: {value}\r\n");
        }
        if self.status != 101 {
            let _ = write!(out, "Content-Length: {}\r\n", self.body.len());
            out.extend_from_slice(if keep_alive { b"Connection: keep-alive\r\n" } else { b"Connection: close\r\n" });
        }
        out.extend_from_slice(b"\r\n");
        if !head_only {
            out.extend_from_slice(&self.body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_status_headers_length_and_connection() {
        let r = Response::text(404, "").into_bytes(false, false);
        let s = String::from_utf8(r).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("Content-Length: 10\r\n"));
        assert!(s.contains("Connection: close\r\n"));
        assert!(s.ends_with("\r\n\r\nNot Found\n"));
    }

    #[test]
    fn head_keeps_the_length_but_not_the_body() {
        let s = String::from_utf8(Response::json(200, "{}".into()).into_bytes(true, true)).unwrap();
        assert!(s.contains("Content-Length: 2\r\n") && s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn switching_protocols_has_no_length() {
        let s = String::from_utf8(Response::new(101).header("Upgrade", "websocket").into_bytes(true, false)).unwrap();
        assert_eq!(s, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n");
    }
}
