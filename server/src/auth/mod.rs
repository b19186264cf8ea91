//! Who may connect, post and read: token authentication, per-room
//! permissions and per-address limits. Everything here is off unless
//! configured, and then the rest of the server sees a narrow interface:
//!
//! - [`authorize`], called by the routes for a chat upgrade and for
//!   `/history`: the request's token (`?token=` or `Authorization: Bearer`)
//!   is verified once ([`token::Verifier`]) and checked against the room
//!   ([`rooms`]); the answer is the connection's [`Identity`] or a
//!   [`Denial`] (401/403 with a one-line reason, counted by its label);
//! - [`peer::PeerTable`], used by the worker: an upgrade rate per client
//!   address (token bucket) and open WebSockets per address, each answered
//!   429 with `Retry-After`;
//! - [`redact`]: a request's query as it may be logged (`token=<redacted>`).
//!
//! Data flow: request head → [`authorize`] → `Identity` (user id, name,
//! expiry) carried by the upgrade to the worker. The expiry becomes the open
//! WebSocket's `deadline` (a field every connection has), the name the chat
//! session's; the user id is the name itself unless they differ (a `name`
//! claim), when the worker keeps it in a map beside its connections. A
//! token whose `sub` is the name thus costs not a byte more than no token.
//! The worker's once-a-second tick closes the connection at its expiry
//! (4001), and its messages are published under the identity's name and
//! user id. No token is kept after the check, and none is ever logged.

pub mod peer;
pub mod rooms;
pub mod token;

use std::borrow::Cow;

use crate::http::header::trim;
use crate::http::query::param;
use crate::http::request::Head;
use crate::http::response::Response;

pub use token::{Identity, Verifier};

crate::metrics::label_enum! {
    /// Why a request was refused: the `reason` label of
    /// `websocket_auth_refusals_total` ([`REFUSALS`]).
    pub enum Refusal, labels REFUSALS {
        /// No token in the query or an `Authorization: Bearer` header.
        Missing = "missing",
        /// Not a JWT (three base64url parts with JSON), or claims of the wrong type.
        Malformed = "malformed",
        /// An algorithm outside the configured family (`none`, HMAC with a public key …).
        BadAlgorithm = "bad_algorithm",
        /// The signature does not verify.
        BadSignature = "bad_signature",
        /// Past `exp`.
        Expired = "expired",
        /// Before `nbf`.
        NotYetValid = "not_yet_valid",
        /// `exp` or `sub` (or `iss`/`aud` when configured) missing.
        MissingClaim = "missing_claim",
        /// `iss` is not `AUTH_JWT_ISSUER`.
        BadIssuer = "bad_issuer",
        /// `aud` is not `AUTH_JWT_AUDIENCE` (or present when none is configured).
        BadAudience = "bad_audience",
        /// `sub`/`name` unusable as a user id or name.
        BadClaims = "bad_claims",
        /// The `rooms` claim does not include the room.
        RoomForbidden = "room_forbidden",
    }
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        REFUSALS[self as usize]
    }

    /// 403 for a valid token without the room, 401 for every token problem.
    pub fn status(self) -> u16 {
        match self {
            Refusal::RoomForbidden => 403,
            _ => 401,
        }
    }
}

/// A refused request: what to count and what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    /// Why.
    pub reason: Refusal,
    /// One line for the response body; never contains the token.
    pub message: String,
}

impl Denial {
    /// A refusal with its message.
    pub fn new(reason: Refusal, message: impl Into<String>) -> Denial {
        Denial { reason, message: message.into() }
    }

    /// The HTTP answer: 401 (with `WWW-Authenticate: Bearer`, RFC 6750) or 403.
    pub fn response(&self) -> Response {
        let status = self.reason.status();
        let resp = Response::text(status, &self.message);
        if status == 401 {
            let error = if self.reason == Refusal::Missing { "" } else { ", error=\"invalid_token\"" };
            resp.header("WWW-Authenticate", format!("Bearer realm=\"chat\"{error}"))
        } else {
            resp
        }
    }
}

/// The token of a request: `?token=` (browsers cannot set headers on a
/// WebSocket), else `Authorization: Bearer`.
pub fn credentials<'h>(head: &'h Head<'_>) -> Option<Cow<'h, str>> {
    if let Ok(Some(t)) = param(head.query, "token") {
        if !t.is_empty() {
            return Some(t);
        }
    }
    let value = trim(head.authorization?);
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ').unwrap_or(value.len()));
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    std::str::from_utf8(trim(rest)).ok().filter(|t| !t.is_empty()).map(Cow::Borrowed)
}

/// Checks that the request may use `room`: `Ok(None)` when authentication
/// is off, the token's identity when it is on and the token is good for
/// the room.
pub fn authorize(verifier: Option<&Verifier>, head: &Head<'_>, room: &str) -> Result<Option<Identity>, Denial> {
    let Some(verifier) = verifier else { return Ok(None) };
    let token = credentials(head).ok_or_else(|| {
        Denial::new(Refusal::Missing, "a token is required: ?token=<JWT> or Authorization: Bearer <JWT>")
    })?;
    let (identity, grant) = verifier.verify(&token)?;
    if !grant.allows(room) {
        return Err(Denial::new(Refusal::RoomForbidden, format!("the token does not grant room {room}")));
    }
    Ok(Some(identity))
}

/// `query` as it may be logged: every `token` value replaced by `<redacted>`.
pub fn redact(query: &str) -> Cow<'_, str> {
    if !query.split('&').any(|p| p.split_once('=').map_or(p, |(k, _)| k) == "token") {
        return Cow::Borrowed(query);
    }
    let parts: Vec<&str> = query
        .split('&')
        .map(|p| if p.split_once('=').map_or(p, |(k, _)| k) == "token" { "token=<redacted>" } else { p })
        .collect();
    Cow::Owned(parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse_head;

    #[test]
    fn redacts_every_token_and_nothing_else() {
        assert_eq!(redact("room=a&name=b"), "room=a&name=b");
        assert_eq!(redact("room=a&token=eyJ.x.y&since=3"), "room=a&token=<redacted>&since=3");
        assert_eq!(redact("token=a&token=b"), "token=<redacted>&token=<redacted>");
        assert_eq!(redact("token"), "token=<redacted>");
        assert_eq!(redact("tokens=1"), "tokens=1");
    }

    #[test]
    fn takes_the_query_token_then_the_bearer_header() {
        let head = |raw: &'static str| parse_head(raw.as_bytes(), 8192).unwrap().unwrap();
        let h = head("GET /ws?token=abc&room=r HTTP/1.1\r\nAuthorization: Bearer def\r\n\r\n");
        assert_eq!(credentials(&h).as_deref(), Some("abc"));
        let h = head("GET /history?room=r HTTP/1.1\r\nAuthorization: bearer  def \r\n\r\n");
        assert_eq!(credentials(&h).as_deref(), Some("def"));
        let h = head("GET /history HTTP/1.1\r\nAuthorization: Basic ZGVm\r\n\r\n");
        assert_eq!(credentials(&h), None);
        let h = head("GET /history?token= HTTP/1.1\r\n\r\n");
        assert_eq!(credentials(&h), None);
    }

    #[test]
    fn labels_and_statuses() {
        assert_eq!(Refusal::RoomForbidden.label(), "room_forbidden");
        assert_eq!(Refusal::RoomForbidden.status(), 403);
        assert_eq!(Refusal::Expired.label(), "expired");
        assert_eq!(Refusal::Expired.status(), 401);
        let r = Denial::new(Refusal::Missing, "x").response();
        assert_eq!(r.status(), 401);
    }
}
