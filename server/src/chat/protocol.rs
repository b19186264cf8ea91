//! The chat protocol's JSON: what clients send, what the server sends back.
//! docs/protocol.md is the contract; the tests here pin its shapes.
//!
//! Incoming frames are parsed with borrowed strings (no copy unless the
//! JSON escapes them). Outgoing chat frames are serialised once per
//! message per pod and shared by every recipient.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::http::query::valid_name;

/// The text sent before a drain close.
pub const DRAIN_NOTICE: &str = r#"{"type":"system","message":"Server is shutting down. Please reconnect."}"#;

/// What a client may send: `{"type":"chat","username":U,"message":M,"clientId":C}`.
#[derive(Debug, Deserialize)]
struct Incoming<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<TypeField<'a>>,
    #[serde(borrow, default)]
    username: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(rename = "clientId", borrow, default)]
    client_id: Option<Cow<'a, str>>,
}

/// `type` as sent: a string, or anything else (which is not `"chat"`
/// either, so it is `unknown_type`, not `bad_json`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TypeField<'a> {
    Name(#[serde(borrow)] Cow<'a, str>),
    Other(serde::de::IgnoredAny),
}

/// Longest `clientId` accepted.
pub const MAX_CLIENT_ID: usize = 64;

/// A chat message a client asked to send, validated.
#[derive(Debug, PartialEq, Eq)]
pub struct ChatIn {
    /// The sender's name: the frame's `username`, or the connection's name.
    pub username: String,
    /// The text.
    pub message: String,
    /// The client's own id for this message (1–64 of `[A-Za-z0-9_-]`): a
    /// resend with the same id, in the same room, is published only once.
    pub client_id: Option<String>,
}

/// Why a client frame was refused: the `code` and `message` of the error frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// Machine-readable code (see docs/protocol.md).
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl Reject {
    /// A refusal with `code` and `message`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Reject {
        Reject { code, message: message.into() }
    }

    /// The error frame's JSON text.
    pub fn to_json(&self) -> String {
        error_json(self.code, &self.message)
    }
}

/// Parses and validates a text frame from a chat client.
pub fn parse_chat(text: &str, default_name: &str, max_chat_bytes: usize) -> Result<ChatIn, Reject> {
    // serde would also take a JSON array for the struct (fields by position).
    if !text.trim_start().starts_with('{') {
        return Err(Reject::new("bad_json", "not a chat frame: expected a JSON object"));
    }
    let incoming: Incoming<'_> =
        serde_json::from_str(text).map_err(|e| Reject::new("bad_json", format!("not a chat frame: {e}")))?;
    if !matches!(&incoming.kind, Some(TypeField::Name(k)) if k == "chat") {
        return Err(Reject::new("unknown_type", "the only frame type a client sends is \"chat\""));
    }
    let message = incoming
        .message
        .filter(|m| !m.is_empty())
        .ok_or_else(|| Reject::new("bad_message", "\"message\" must be a non-empty string"))?;
    if message.len() > max_chat_bytes {
        return Err(Reject::new(
            "too_long",
            format!("message is {} bytes; the limit is {max_chat_bytes}", message.len()),
        ));
    }
    let username = match incoming.username {
        None => default_name.to_string(),
        Some(u) if valid_name(&u) => u.into_owned(),
        Some(_) => return Err(Reject::new("bad_username", "\"username\" must be 1 to 32 printable characters")),
    };
    let client_id = match incoming.client_id {
        None => None,
        Some(id) if valid_client_id(&id) => Some(id.into_owned()),
        Some(_) => {
            return Err(Reject::new(
                "bad_client_id",
                format!("\"clientId\" must be 1 to {MAX_CLIENT_ID} of A-Z, a-z, 0-9, _ and -"),
            ))
        }
    };
    Ok(ChatIn { username, message: message.into_owned(), client_id })
}

/// Whether `id` is a valid `clientId`: 1–64 of `[A-Za-z0-9_-]` (safe inside
/// a Redis key and a JSON string without escaping).
pub fn valid_client_id(id: &str) -> bool {
    (1..=MAX_CLIENT_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A sequenced chat message: what every pod delivers and MongoDB stores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// The room.
    pub room: String,
    /// Position in the room: 1, 2, 3, … across the whole deployment.
    pub seq: u64,
    /// Opaque unique id.
    pub id: String,
    /// Sender's name.
    pub username: String,
    /// The text.
    pub message: String,
    /// The pod the sender was connected to.
    #[serde(rename = "podName")]
    pub pod_name: String,
    /// When the origin pod accepted it, Unix milliseconds.
    #[serde(rename = "ts")]
    pub timestamp_ms: i64,
    /// The sender's own id for it, if it gave one (see [`ChatIn::client_id`]).
    #[serde(rename = "clientId", default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The sender's user id (the token's `sub`), when authentication is on.
    #[serde(rename = "userId", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

/// The chat frame's field order, as in docs/protocol.md.
#[derive(Serialize)]
struct ChatOut<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    username: &'a str,
    message: &'a str,
    #[serde(rename = "podName")]
    pod_name: &'a str,
    timestamp: String,
    room: &'a str,
    seq: u64,
    id: &'a str,
    #[serde(rename = "clientId", skip_serializing_if = "Option::is_none")]
    client_id: Option<&'a str>,
    #[serde(rename = "userId", skip_serializing_if = "Option::is_none")]
    user_id: Option<&'a str>,
}

impl ChatMessage {
    /// The chat frame's JSON text.
    pub fn to_json(&self) -> String {
        let out = ChatOut {
            kind: "chat",
            username: &self.username,
            message: &self.message,
            pod_name: &self.pod_name,
            timestamp: clock::iso8601(self.timestamp_ms),
            room: &self.room,
            seq: self.seq,
            id: &self.id,
            client_id: self.client_id.as_deref(),
            user_id: self.user_id.as_deref(),
        };
        serde_json::to_string(&out).unwrap_or_default()
    }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// An error frame's JSON text.
pub fn error_json(code: &str, message: &str) -> String {
    format!(r#"{{"type":"error","code":{},"message":{}}}"#, json_string(code), json_string(message))
}

/// What the welcome frame says about the join.
#[derive(Debug)]
pub struct Welcome<'a> {
    /// This pod.
    pub pod_name: &'a str,
    /// The connection's id.
    pub connection: u64,
    /// The room joined.
    pub room: &'a str,
    /// The room's latest seq when the snapshot was taken.
    pub last_seq: u64,
    /// The chat frames' JSON texts, oldest first.
    pub history: Vec<&'a [u8]>,
    /// With `since`: whether everything after it was still stored.
    pub recovered: Option<bool>,
}

impl Welcome<'_> {
    /// The system frame sent on open.
    pub fn to_json(&self) -> String {
        let history_len: usize = self.history.iter().map(|h| h.len() + 1).sum();
        let mut s = String::with_capacity(256 + history_len);
        s.push_str(r#"{"type":"system","message":"#);
        s.push_str(&json_string(&format!("Connected to pod: {}", self.pod_name)));
        s.push_str(r#","podName":"#);
        s.push_str(&json_string(self.pod_name));
        s.push_str(r#","timestamp":""#);
        s.push_str(&clock::iso8601(clock::unix_millis()));
        s.push_str(&format!(r#"","connection":{},"room":"#, self.connection));
        s.push_str(&json_string(self.room));
        s.push_str(&format!(r#","lastSeq":{}"#, self.last_seq));
        if let Some(r) = self.recovered {
            s.push_str(&format!(r#","recovered":{r}"#));
        }
        s.push_str(r#","history":["#);
        for (i, h) in self.history.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            // Each entry is a chat frame's JSON text, produced by ChatMessage::to_json.
            s.push_str(std::str::from_utf8(h).unwrap_or("null"));
        }
        s.push_str("]}");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_the_original_clients_frame() {
        let c = parse_chat(r#"{"type":"chat","username":"ana","message":"hi"}"#, "Anonymous", 4096).unwrap();
        assert_eq!(c, ChatIn { username: "ana".into(), message: "hi".into(), client_id: None });
        let c = parse_chat(r#"{"type":"chat","message":"hi","extra":1}"#, "bob", 4096).unwrap();
        assert_eq!(c.username, "bob", "username defaults to the connection's name");
        let c = parse_chat(r#"{"type":"chat","message":"\u00e9\n<b>"}"#, "x", 4096).unwrap();
        assert_eq!(c.message, "é\n<b>");
        let c = parse_chat(r#"{"type":"chat","message":"hi","clientId":"a-1_Z"}"#, "x", 4096).unwrap();
        assert_eq!(c.client_id.as_deref(), Some("a-1_Z"));
    }

    #[test]
    fn refusals_carry_their_codes() {
        let code = |t: &str| parse_chat(t, "x", 10).unwrap_err().code;
        assert_eq!(code("not json"), "bad_json");
        assert_eq!(code("[1,2]"), "bad_json");
        assert_eq!(code(r#"["chat","mallory","hello"]"#), "bad_json", "an array is not an object");
        assert_eq!(code(r#"{"type":5,"message":"hi"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":null,"message":"hi"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"chat","message":5}"#), "bad_json");
        assert_eq!(code(r#"{"type":"join"}"#), "unknown_type");
        assert_eq!(code(r#"{"message":"hi"}"#), "unknown_type");
        assert_eq!(code(r#"{"type":"chat"}"#), "bad_message");
        assert_eq!(code(r#"{"type":"chat","message":""}"#), "bad_message");
        assert_eq!(code(r#"{"type":"chat","message":"12345678901"}"#), "too_long");
        assert_eq!(code(r#"{"type":"chat","message":"1","username":""}"#), "bad_username");
        assert_eq!(code(r#"{"type":"chat","message":"1","clientId":""}"#), "bad_client_id");
        assert_eq!(code(r#"{"type":"chat","message":"1","clientId":"a b"}"#), "bad_client_id");
        assert_eq!(
            code(&format!(r#"{{"type":"chat","message":"1","clientId":"{}"}}"#, "a".repeat(65))),
            "bad_client_id"
        );
        assert_eq!(code(r#"{"type":"chat","message":"1","clientId":7}"#), "bad_json");
        assert!(parse_chat(r#"{"type":"chat","message":"1234567890"}"#, "x", 10).is_ok(), "exactly the limit");
    }

    #[test]
    fn chat_frame_has_the_contract_fields_in_order() {
        let m = ChatMessage {
            room: "lobby".into(),
            seq: 7,
            id: "abc".into(),
            username: "ana".into(),
            message: "say \"hi\"".into(),
            pod_name: "websocket-server-0".into(),
            timestamp_ms: 0,
            client_id: None,
            user_id: None,
        };
        assert_eq!(
            m.to_json(),
            r#"{"type":"chat","username":"ana","message":"say \"hi\"","podName":"websocket-server-0","timestamp":"1970-01-01T00:00:00.000Z","room":"lobby","seq":7,"id":"abc"}"#
        );
        let with_id = ChatMessage { client_id: Some("c-1".into()), ..m };
        assert!(with_id.to_json().ends_with(r#","id":"abc","clientId":"c-1"}"#));
        let with_user = ChatMessage { user_id: Some("u-7".into()), ..with_id };
        assert!(with_user.to_json().ends_with(r#","clientId":"c-1","userId":"u-7"}"#));
    }

    #[test]
    fn welcome_embeds_history_and_recovery() {
        let w = Welcome {
            pod_name: "p",
            connection: 3,
            room: "r",
            last_seq: 2,
            history: vec![br#"{"seq":1}"#, br#"{"seq":2}"#],
            recovered: Some(true),
        };
        let v: serde_json::Value = serde_json::from_str(&w.to_json()).unwrap();
        assert_eq!(v["type"], "system");
        assert_eq!(v["message"], "Connected to pod: p");
        assert_eq!(v["podName"], "p");
        assert_eq!(v["connection"], 3);
        assert_eq!(v["lastSeq"], 2);
        assert_eq!(v["recovered"], true);
        assert_eq!(v["history"][1]["seq"], 2);
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
        let plain = Welcome { recovered: None, history: vec![], ..w };
        let v: serde_json::Value = serde_json::from_str(&plain.to_json()).unwrap();
        assert!(v.get("recovered").is_none());
    }

    #[test]
    fn error_and_drain_frames_are_json() {
        let v: serde_json::Value = serde_json::from_str(&error_json("too_long", "a \"b\"")).unwrap();
        assert_eq!((v["type"].as_str(), v["code"].as_str()), (Some("error"), Some("too_long")));
        let v: serde_json::Value = serde_json::from_str(DRAIN_NOTICE).unwrap();
        assert_eq!(v["message"], "Server is shutting down. Please reconnect.");
    }
}
