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

/// The page's HTML, served at `/` and `/index.html`.
const INDEX: Asset =
    Asset { content_type: "text/html; charset=utf-8", body: include_bytes!("../../static/index.html") };

/// Every embedded file by path. The page loads only these (same origin).
const ASSETS: &[(&str, Asset)] = &[
    ("/", INDEX),
    ("/index.html", INDEX),
    ("/app.js", Asset { content_type: "text/javascript; charset=utf-8", body: include_bytes!("../../static/app.js") }),
    ("/app.css", Asset { content_type: "text/css; charset=utf-8", body: include_bytes!("../../static/app.css") }),
    ("/favicon.svg", Asset { content_type: "image/svg+xml", body: include_bytes!("../../static/favicon.svg") }),
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
