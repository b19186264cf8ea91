//! The chat page's static files, embedded in the binary at build time (no
//! file on disk at run time), served under a strict Content-Security-Policy.

use super::response::Response;

/// Scripts and styles only from this origin, no inline code, no framing;
/// WebSocket connections to this origin (CSP3 `'self'` covers ws/wss).
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// One embedded file.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    /// Its MIME type.
    pub content_type: &'static str,
    /// Its bytes.
    pub body: &'static [u8],
}

const ASSETS: &[(&str, Asset)] = &[
    ("/", Asset { content_type: "text/html; charset=utf-8", body: include_bytes!("../../static/index.html") }),
    (
        "/index.html",
        Asset { content_type: "text/html; charset=utf-8", body: include_bytes!("../../static/index.html") },
    ),
];

/// The asset served at `path`, if any.
pub fn find(path: &str) -> Option<Asset> {
    ASSETS.iter().find(|(p, _)| *p == path).map(|(_, a)| *a)
}

impl Asset {
    /// The response carrying this file.
    pub fn response(&self) -> Response {
        Response::new(200)
            .header("Content-Type", self.content_type)
            .header("Content-Security-Policy", CSP)
            .header("X-Content-Type-Options", "nosniff")
            .header("Referrer-Policy", "no-referrer")
            .header("Cache-Control", "no-cache")
            .body(self.body)
    }
}
