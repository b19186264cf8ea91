//! Replica mode: several server processes act as one chat through Redis.
//!
//! Two dedicated threads per pod, so no worker ever blocks on Redis:
//! - [`publisher`] takes validated messages from the workers (the same
//!   bounded channel the embedded hub reads), and runs one Lua script per
//!   batch and node (standalone or cluster alike) that assigns each room's
//!   next seqs, appends the messages to the room's Redis list and publishes
//!   them on the room's shard channel, atomically. The origin pod hands
//!   each to its MongoDB writer when it comes back through its subscription
//!   ([`echo`]: one Redis lost before delivering it is published again).
//! - [`subscriber`] subscribes to the rooms this pod has members in. Every
//!   such pod, the origin included, delivers from it: it checks each room's
//!   seq for gaps (and fills them from the Redis list before delivering on),
//!   stores the message in history, frames it once and fans it out.
//!
//! [`topology`] maps a room to its Redis node (a standalone Redis is one
//! node owning every slot); [`pool`] and [`resp`] are the connections.
//!
//! Redis data (hash tags keep a room's keys in one cluster slot):
//!
//! | Key / channel | Type | Content |
//! | --- | --- | --- |
//! | `chat:{ROOM}:seq` | string | the room's latest seq |
//! | `chat:{ROOM}:history` | list | the last `HISTORY_RING` messages, as published |
//! | `chat:{ROOM}:client:CID` | string, 10 min TTL | `SEQ ID`, for a message with `clientId` CID only: a client's resend is published once |
//! | `chat:{ROOM}:ch` | shard channel | the room's messages (`SPUBLISH`; pods with members `SSUBSCRIBE`) |
//!
//! A stored message is `SEQ JSON`: the decimal seq, a space, and the
//! message's fields as JSON ([`ChatMessage`] without its seq); a publish
//! carries one or more of them, a line each.

pub mod echo;
pub mod pool;
pub mod publisher;
pub mod resp;
pub mod subscriber;
pub mod topology;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::backoff::Backoff;
use crate::chat::protocol::ChatMessage;
use topology::Node;

/// Rooms whose subscription Redis has confirmed on this pod and that are
/// caught up: written by the subscriber, read by the publisher, which
/// publishes into a room only while this pod listens to it. Otherwise a
/// pod's first messages into a fresh room could be published before its
/// subscription is in place, and more of them than the Redis list keeps
/// would leave a gap no fill can close. Each time a room becomes live it
/// gets a new *generation* (see [`echo`]).
#[derive(Debug, Default)]
pub struct LiveRooms {
    rooms: std::sync::RwLock<HashMap<Arc<str>, u64>>,
    generations: std::sync::atomic::AtomicU64,
}

impl LiveRooms {
    /// The generation of `room` if it is subscribed here (live), else `None`.
    pub fn generation(&self, room: &str) -> Option<u64> {
        self.rooms.read().unwrap_or_else(|e| e.into_inner()).get(room).copied()
    }

    /// Marks `room` subscribed (`true`: under a new generation) or not.
    pub fn set(&self, room: &Arc<str>, live: bool) {
        let mut rooms = self.rooms.write().unwrap_or_else(|e| e.into_inner());
        if live {
            let generation = self.generations.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            rooms.insert(room.clone(), generation);
        } else {
            rooms.remove(room);
        }
    }
}

/// The room's shard channel (same hash tag, so same slot, as its keys).
pub fn channel(room: &str) -> String {
    format!("chat:{{{room}}}:ch")
}

/// The room of a shard channel name, if it is one of ours.
pub fn room_of_channel(name: &[u8]) -> Option<Arc<str>> {
    let inner = name.strip_prefix(b"chat:{")?.strip_suffix(b"}:ch")?;
    std::str::from_utf8(inner).ok().map(Arc::from)
}

/// Seconds a client id is remembered, so a client's resend of a message
/// (through any pod) returns the first seq instead of publishing twice.
pub const DEDUPE_TTL_SECS: u64 = 600;

/// The room's seq counter.
pub fn seq_key(room: &str) -> String {
    format!("chat:{{{room}}}:seq")
}

/// The room's recent messages.
pub fn history_key(room: &str) -> String {
    format!("chat:{{{room}}}:history")
}

/// The dedupe marker of a message with a `clientId`: its resends through
/// any pod share it.
pub fn client_key(room: &str, client_id: &str) -> String {
    format!("chat:{{{room}}}:client:{client_id}")
}

/// Assigns seqs, stores and publishes a batch of messages, atomically per
/// room: one call per node (every room of the batch that node owns), so the
/// per-call cost is shared whether Redis is one server or a cluster.
///
/// `KEYS`: the seq counter of the call's first room, only so that a
/// cluster routes the call (and answers `MOVED`, `ASK`, `TRYAGAIN`) by it;
/// the script makes every key name from its room (the names of [`seq_key`],
/// [`history_key`], [`client_key`] and [`channel`]). The rooms of a cluster
/// call may hash to several slots of the node, which the script's
/// `allow-cross-slot-keys` flag permits. `ARGV`: the ring, the marker TTL
/// and the *check* flag, then per room its name, its floor and its message
/// count, then per message its id, clientId (or empty), in-doubt flag
/// (`1`/`0`) and JSON.
///
/// Returns one integer per message, in that order:
/// - the seq given to it;
/// - the same, if it was already published: a message *in doubt* (a retry
///   after a lost reply) is looked up by its id in the tail of the room's
///   list, so no per-message marker is written for that case;
/// - `-SEQ` if another message with the same `clientId` was published as
///   SEQ (a client's resend: not published again).
///
/// With the check flag (a cluster), each room's keys are probed with
/// `EXISTS` before any of them is written: if one is not this node's (its
/// slot moved, or is mid-migration), the script stops there and returns the
/// results so far: a shorter answer. The rooms it answered for ran whole;
/// the rest did not run at all, so they are simply sent again (see the
/// publisher). No room is ever half-written.
///
/// The counter never goes below the room's floor, the latest seq the
/// publishing pod has delivered in the room: if Redis lost its data (a
/// restart without persistence), sequencing continues where the
/// deployment was.
/// Each room's new messages go out in one `SPUBLISH`, newline-separated
/// (JSON has no raw newline): one publish per room per call, not per message.
/// Per room and call: `INCRBY`, `RPUSH`, `SPUBLISH`, and `LTRIM` only when
/// the list has grown an eighth past the ring (readers take its last `ring`
/// entries), so a list holds at most `ring + ring / 8` messages.
/// A client marker without an owner id (an older format) counts as this message's.
pub const PUBLISH_SCRIPT: &str = r#"#!lua flags=allow-cross-slot-keys
local ring = tonumber(ARGV[1])
local ttl = ARGV[2]
local check = ARGV[3] == '1'
local slack = math.floor(ring / 8)
local a = 4
local out = {}
while a <= #ARGV do
  local room, floor, n = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  local base = 'chat:{' .. room .. '}:'
  local seqk, histk = base .. 'seq', base .. 'history'
  if check then
    local probe = {seqk, histk}
    for j = 0, n - 1 do
      local cid = ARGV[a + 4 * j + 1]
      if cid ~= '' then probe[#probe + 1] = base .. 'client:' .. cid end
    end
    local r = redis.pcall('EXISTS', unpack(probe))
    if type(r) == 'table' and r.err then return out end
  end
  local fresh, tail = {}, nil
  for _ = 1, n do
    local id, cid, doubt, json = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
    a = a + 4
    local mk, done, found = nil, nil, nil
    if cid ~= '' then
      mk = base .. 'client:' .. cid
      done = redis.call('GET', mk)
    end
    if done then
      local s, owner = string.match(done, '^(%d+) (.*)$')
      if not s then found = tonumber(done)
      elseif owner == id then found = tonumber(s)
      else found = -tonumber(s) end
    elseif doubt == '1' then
      if not tail then tail = redis.call('LRANGE', histk, -ring, -1) end
      local needle = '"id":"' .. id .. '"'
      for j = #tail, 1, -1 do
        if string.find(tail[j], needle, 1, true) then
          found = tonumber(string.match(tail[j], '^(%d+) '))
          break
        end
      end
    end
    if found then
      out[#out + 1] = found
    else
      out[#out + 1] = 0
      fresh[#fresh + 1] = {#out, id, mk, json}
    end
  end
  local c = #fresh
  if c > 0 then
    local last = redis.call('INCRBY', seqk, c)
    if last - c < floor then
      last = floor + c
      redis.call('SET', seqk, last)
    end
    local items = {}
    for i, f in ipairs(fresh) do
      local seq = last - c + i
      out[f[1]] = seq
      items[i] = seq .. ' ' .. f[4]
      if f[3] then redis.call('SET', f[3], seq .. ' ' .. f[2], 'EX', ttl) end
    end
    if redis.call('RPUSH', histk, unpack(items)) > ring + slack then
      redis.call('LTRIM', histk, -ring, -1)
    end
    redis.call('SPUBLISH', base .. 'ch', table.concat(items, '\n'))
  end
end
return out
"#;

/// One room's part of a publish script call: its name, its floor (the
/// latest seq the publishing pod has delivered in it) and its messages in order,
/// each with its in-doubt flag.
pub struct RoomCall<'a> {
    pub room: &'a str,
    pub floor: u64,
    pub messages: Vec<(&'a ChatMessage, bool)>,
}

/// A publish script call for `rooms` (at least one): the key Redis routes
/// it by (the first room's counter) and its `ARGV`, in the layout
/// [`PUBLISH_SCRIPT`] reads. `check` is set in a cluster.
pub fn publish_call(ring: usize, check: bool, rooms: &[RoomCall<'_>]) -> (String, Vec<String>) {
    let mut args = vec![ring.to_string(), DEDUPE_TTL_SECS.to_string(), if check { "1" } else { "0" }.to_string()];
    for r in rooms {
        args.extend([r.room.to_string(), r.floor.to_string(), r.messages.len().to_string()]);
        for (msg, doubt) in &r.messages {
            args.extend([
                msg.id.clone(),
                msg.client_id.clone().unwrap_or_default(),
                if *doubt { "1" } else { "0" }.to_string(),
                encode_fields(msg),
            ]);
        }
    }
    (seq_key(rooms[0].room), args)
}

/// Finds the seq of message `id` in a room's list items (`SEQ JSON` each),
/// as the script does for a message in doubt.
pub fn find_in_list(items: &[Vec<u8>], id: &str) -> Option<u64> {
    let needle = format!("\"id\":\"{id}\"");
    items.iter().rev().find_map(|raw| {
        let text = std::str::from_utf8(raw).ok()?;
        text.contains(&needle).then(|| text.split_once(' ')?.0.parse().ok()).flatten()
    })
}

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

/// The largest seq: a Redis counter is a signed 64-bit integer.
pub const MAX_SEQ: u64 = i64::MAX as u64;

/// Parses `SEQ JSON` as published; `None` if it is not ours. A seq is in
/// `1..=i64::MAX`: what a Redis counter can reach and MongoDB can store (a
/// larger one, written by something else, would wrap when stored and
/// overflow the sequence arithmetic).
pub fn decode(payload: &[u8]) -> Option<ChatMessage> {
    let text = std::str::from_utf8(payload).ok()?;
    let (seq, json) = text.split_once(' ')?;
    let f: Fields<'_> = serde_json::from_str(json).ok()?;
    Some(ChatMessage {
        room: f.room.into_owned(),
        seq: seq.parse().ok().filter(|&s| s > 0 && s <= MAX_SEQ)?,
        id: f.id.into_owned(),
        username: f.username.into_owned(),
        message: f.message.into_owned(),
        pod_name: f.pod_name.into_owned(),
        timestamp_ms: f.ts,
        client_id: f.client_id.map(Cow::into_owned),
        user_id: f.user_id.map(Cow::into_owned),
    })
}

/// Records a failure of `node` in `down` (the publisher's and the
/// subscriber's map of failed nodes, each reconnecting on its own pacing:
/// 50 ms doubling to 1 s, so a promoted replica is tried soon). Returns the
/// wait before the next attempt, and whether this node's outage just began
/// (the moment to log it).
pub fn node_failed(down: &mut HashMap<Node, Backoff>, node: &Node) -> (Duration, bool) {
    down.entry(node.clone())
        .or_insert_with(|| Backoff::new(Duration::from_millis(50), Duration::from_secs(1)))
        .failed_first()
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
        assert_eq!(decode(format!("9 {}", encode_fields(&m)).as_bytes()), Some(m.clone()));
        assert_eq!(decode(b"x {}"), None);
        assert_eq!(decode(b"0 {}"), None);
        let beyond = format!("{} {}", MAX_SEQ + 1, encode_fields(&m));
        assert_eq!(decode(beyond.as_bytes()), None, "beyond a Redis counter");
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
        assert_eq!(client_key(&m.room, "c"), "chat:{lobby}:client:c");
        assert_eq!(channel(&m.room), "chat:{lobby}:ch");
        assert_eq!(room_of_channel(b"chat:{lobby}:ch").as_deref(), Some("lobby"));
        assert_eq!(room_of_channel(b"chat:messages"), None);
        m.seq = 7;
        let listed = vec![format!("7 {}", encode_fields(&m)).into_bytes()];
        assert_eq!(find_in_list(&listed, "i"), Some(7));
        assert_eq!(find_in_list(&listed, "j"), None);
    }
}
