//! Replica mode: several server processes act as one chat through Redis.
//!
//! Two dedicated threads per pod, so no worker ever blocks on Redis:
//! - [`publisher`] takes validated messages from the workers (the same
//!   bounded channel the embedded hub reads), and runs one Lua script per
//!   message — pipelined when they pile up — that assigns the room's next
//!   seq, appends the message to the room's Redis list and publishes it,
//!   atomically. Then the origin pod hands it to its MongoDB writer.
//! - [`subscriber`] holds the blocking subscription. Every pod, the origin
//!   included, delivers from it: it checks each room's seq for gaps (and
//!   fills them from the Redis list before delivering on), stores the
//!   message in history, frames it once and fans it out to its workers.
//!
//! Redis data (hash tags keep a room's keys in one cluster slot):
//!
//! | Key / channel | Type | Content |
//! | --- | --- | --- |
//! | `chat:{ROOM}:seq` | string | the room's latest seq |
//! | `chat:{ROOM}:history` | list | the last `HISTORY_RING` messages, as published |
//! | `chat:{ROOM}:msg:ID` | string, 10 min TTL | `SEQ ID`: the seq given to message ID (makes a retried publish idempotent) |
//! | `chat:{ROOM}:client:CID` | string, 10 min TTL | `SEQ ID`, in place of the above for a message with `clientId` CID: a client's resend is published once |
//! | `chat:messages` | pub/sub channel | every message of every room |
//!
//! A published message is `SEQ JSON`: the decimal seq, a space, and the
//! message's fields as JSON ([`ChatMessage`] without its seq).

pub mod publisher;
pub mod subscriber;

use std::borrow::Cow;

use crate::chat::protocol::ChatMessage;

/// The pub/sub channel every pod subscribes to.
pub const CHANNEL: &str = "chat:messages";

/// Seconds a message id (or client id) is remembered, so a publish retried
/// after a lost reply, or a client's resend, returns the first seq instead
/// of publishing twice.
pub const DEDUPE_TTL_SECS: u64 = 600;

/// The room's seq counter.
pub fn seq_key(room: &str) -> String {
    format!("chat:{{{room}}}:seq")
}

/// The room's recent messages.
pub fn history_key(room: &str) -> String {
    format!("chat:{{{room}}}:history")
}

/// The dedupe marker of one message: by its `clientId` when the client gave
/// one (so its resends through any pod share it), else by its server id.
pub fn dedupe_key(m: &ChatMessage) -> String {
    let room = &m.room;
    match &m.client_id {
        Some(cid) => format!("chat:{{{room}}}:client:{cid}"),
        None => format!("chat:{{{room}}}:msg:{}", m.id),
    }
}

/// Assigns the next seq, stores and publishes, atomically; returns the seq.
///
/// The counter never goes below `floor`, the highest seq the publishing pod
/// knows for the room: if Redis lost its data (a restart without
/// persistence), sequencing continues where the deployment was instead of
/// starting again at 1.
///
/// When the dedupe marker exists, nothing is published: the answer is the
/// seq it records, positive if the marker is this very message's (a retry
/// after a lost reply: the caller still stores it), negative if it is
/// another message's with the same `clientId` (a client's resend: the
/// first one's origin pod stores that). A marker without an id (written
/// before ids were recorded) counts as this message's.
pub const PUBLISH_SCRIPT: &str = r#"
-- KEYS[1] seq counter, KEYS[2] history list, KEYS[3] dedupe marker
-- ARGV[1] floor, ARGV[2] message JSON, ARGV[3] channel, ARGV[4] ring, ARGV[5] dedupe TTL, ARGV[6] message id
local done = redis.call('GET', KEYS[3])
if done then
  local s, owner = string.match(done, '^(%d+) (.*)$')
  if not s then return tonumber(done) end
  if owner == ARGV[6] then return tonumber(s) end
  return -tonumber(s)
end
local seq = tonumber(redis.call('GET', KEYS[1]) or '0')
local floor = tonumber(ARGV[1])
if floor > seq then seq = floor end
seq = seq + 1
redis.call('SET', KEYS[1], seq)
local payload = seq .. ' ' .. ARGV[2]
redis.call('RPUSH', KEYS[2], payload)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[4]), -1)
redis.call('SET', KEYS[3], seq .. ' ' .. ARGV[6], 'EX', tonumber(ARGV[5]))
redis.call('PUBLISH', ARGV[3], payload)
return seq
"#;

/// The JSON part of a published message: the message without its seq.
pub fn encode_fields(m: &ChatMessage) -> String {
    serde_json::to_string(&Fields {
        room: Cow::Borrowed(&m.room),
        id: Cow::Borrowed(&m.id),
        username: Cow::Borrowed(&m.username),
        message: Cow::Borrowed(&m.message),
        pod_name: Cow::Borrowed(&m.pod_name),
        ts: m.timestamp_ms,
        client_id: m.client_id.as_deref().map(Cow::Borrowed),
        user_id: m.user_id.as_deref().map(Cow::Borrowed),
    })
    .unwrap_or_default()
}

/// Borrowed where the JSON has no escapes, owned where it has.
#[derive(serde::Serialize, serde::Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    room: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    username: Cow<'a, str>,
    #[serde(borrow)]
    message: Cow<'a, str>,
    #[serde(rename = "podName", borrow)]
    pod_name: Cow<'a, str>,
    ts: i64,
    #[serde(rename = "clientId", borrow, default, skip_serializing_if = "Option::is_none")]
    client_id: Option<Cow<'a, str>>,
    #[serde(rename = "userId", borrow, default, skip_serializing_if = "Option::is_none")]
    user_id: Option<Cow<'a, str>>,
}

/// Parses `SEQ JSON` as published; `None` if it is not ours.
pub fn decode(payload: &[u8]) -> Option<ChatMessage> {
    let text = std::str::from_utf8(payload).ok()?;
    let (seq, json) = text.split_once(' ')?;
    let f: Fields<'_> = serde_json::from_str(json).ok()?;
    Some(ChatMessage {
        room: f.room.into_owned(),
        seq: seq.parse().ok().filter(|&s| s > 0)?,
        id: f.id.into_owned(),
        username: f.username.into_owned(),
        message: f.message.into_owned(),
        pod_name: f.pod_name.into_owned(),
        timestamp_ms: f.ts,
        client_id: f.client_id.map(Cow::into_owned),
        user_id: f.user_id.map(Cow::into_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format_round_trips() {
        let m = ChatMessage {
            room: "r-1".into(),
            seq: 9,
            id: "abc-1".into(),
            username: "ana \"x\"".into(),
            message: "hi\nthere €".into(),
            pod_name: "p-0".into(),
            timestamp_ms: 1234,
            client_id: None,
            user_id: None,
        };
        let wire = format!("9 {}", encode_fields(&m));
        assert!(!wire.contains("clientId"), "absent, not null: older pods read it unchanged");
        assert_eq!(decode(wire.as_bytes()), Some(m.clone()));
        let m = ChatMessage { client_id: Some("c-1".into()), user_id: Some("u-1".into()), ..m };
        assert_eq!(decode(format!("9 {}", encode_fields(&m)).as_bytes()), Some(m));
        assert_eq!(decode(b"x {}"), None);
        assert_eq!(decode(b"0 {}"), None);
        assert_eq!(decode(b"nonsense"), None);
    }

    #[test]
    fn keys_share_a_hash_tag_per_room() {
        assert_eq!(seq_key("lobby"), "chat:{lobby}:seq");
        assert_eq!(history_key("lobby"), "chat:{lobby}:history");
        let mut m = ChatMessage {
            room: "lobby".into(),
            seq: 0,
            id: "i".into(),
            username: String::new(),
            message: String::new(),
            pod_name: String::new(),
            timestamp_ms: 0,
            client_id: None,
            user_id: None,
        };
        assert_eq!(dedupe_key(&m), "chat:{lobby}:msg:i");
        m.client_id = Some("c".into());
        assert_eq!(dedupe_key(&m), "chat:{lobby}:client:c");
    }
}
