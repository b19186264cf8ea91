//! The chat protocol as the original clients speak it: the JSON frames the
//! server sends (`system`, `chat`, `error`), parsed without copying, and the
//! `chat` frame a client sends, whose text carries a marker
//! `cf|<run tag>|<connection>|<n>|<send time, unix µs>|` so that any
//! receiver can tell who sent it, which one it was, and its latency.

use std::borrow::Cow;
use std::fmt::Write as _;

use serde::Deserialize;

/// A frame from the server; fields that do not apply are `None`.
#[derive(Debug, Deserialize)]
pub struct Incoming<'a> {
    /// `system`, `chat`, `error`, …
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    /// The text (chat message, system notice or error description).
    #[serde(default, borrow)]
    pub message: Option<Cow<'a, str>>,
    /// The pod the connection is on (system) or the message came from (chat).
    #[serde(rename = "podName", default, borrow)]
    pub pod: Option<Cow<'a, str>>,
    /// The room.
    #[serde(default, borrow)]
    pub room: Option<Cow<'a, str>>,
    /// A chat message's sequence number in its room.
    #[serde(default)]
    pub seq: Option<u64>,
    /// On join: the room's latest seq.
    #[serde(rename = "lastSeq", default)]
    pub last_seq: Option<u64>,
    /// On a resume: whether every message after `since` was still stored.
    #[serde(default)]
    pub recovered: Option<bool>,
    /// On join: earlier chat frames, oldest first.
    #[serde(default, borrow)]
    pub history: Option<Vec<Chat<'a>>>,
    /// An error frame's code.
    #[serde(default, borrow)]
    pub code: Option<Cow<'a, str>>,
}

/// A chat frame inside a join's `history`.
#[derive(Debug, Deserialize)]
pub struct Chat<'a> {
    /// The text.
    #[serde(default, borrow)]
    pub message: Cow<'a, str>,
    /// Its sequence number.
    #[serde(default)]
    pub seq: Option<u64>,
    /// Its room.
    #[serde(default, borrow)]
    pub room: Option<Cow<'a, str>>,
}

/// Parses a text frame from the server.
///
/// Live chat frames are flat objects of plain strings and numbers, and at
/// fan-out rates parsing them is most of the client's work: those take
/// [`parse_flat`], which yields what serde would; anything else (escapes,
/// nested values such as a join's history, malformed text) goes to serde_json.
pub fn parse(text: &str) -> Result<Incoming<'_>, serde_json::Error> {
    match parse_flat(text) {
        Some(frame) => Ok(frame),
        None => serde_json::from_str(text),
    }
}

/// The fast path of [`parse`]: a JSON object whose keys and values are strings
/// without escapes, unsigned integers, booleans or null, each key at most once, with a
/// `type`. `None` for anything else, so the caller falls back to serde.
fn parse_flat(text: &str) -> Option<Incoming<'_>> {
    let b = text.as_bytes();
    let mut f = Incoming {
        kind: Cow::Borrowed(""),
        message: None,
        pod: None,
        room: None,
        seq: None,
        last_seq: None,
        recovered: None,
        history: None,
        code: None,
    };
    let mut seen = 0u16;
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return None; // no type
    }
    loop {
        let (key, next) = flat_string(text, i)?;
        i = skip_ws(b, next);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let value_start = i;
        let value: Flat<'_> = match b.get(i)? {
            b'"' => {
                let (s, next) = flat_string(text, i)?;
                i = next;
                Flat::Str(s)
            }
            b'0'..=b'9' => {
                let end = i + b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                let n = text[i..end].parse().ok()?;
                i = end;
                Flat::Num(n)
            }
            _ => {
                let rest = &text[value_start..];
                let (v, len) = [("true", Flat::Bool(true)), ("false", Flat::Bool(false)), ("null", Flat::Null)]
                    .into_iter()
                    .find(|(word, _)| rest.starts_with(word))
                    .map(|(word, v)| (v, word.len()))?;
                i += len;
                v
            }
        };
        let slot = match key {
            "type" => 0,
            "message" => 1,
            "podName" => 2,
            "room" => 3,
            "seq" => 4,
            "lastSeq" => 5,
            "recovered" => 6,
            "history" => 7,
            "code" => 8,
            _ => 15,
        };
        if slot != 15 {
            if seen & (1 << slot) != 0 {
                return None; // serde rejects a duplicate field
            }
            seen |= 1 << slot;
        }
        match (slot, value) {
            (0, Flat::Str(s)) => f.kind = Cow::Borrowed(s),
            (1, Flat::Str(s)) => f.message = Some(Cow::Borrowed(s)),
            (2, Flat::Str(s)) => f.pod = Some(Cow::Borrowed(s)),
            (3, Flat::Str(s)) => f.room = Some(Cow::Borrowed(s)),
            (4, Flat::Num(n)) => f.seq = Some(n),
            (5, Flat::Num(n)) => f.last_seq = Some(n),
            (6, Flat::Bool(v)) => f.recovered = Some(v),
            (8, Flat::Str(s)) => f.code = Some(Cow::Borrowed(s)),
            (1..=8, Flat::Null) | (15, _) => {}
            _ => return None, // a type serde would judge: let it
        }
        i = skip_ws(b, i);
        match b.get(i)? {
            b',' => i = skip_ws(b, i + 1),
            b'}' if skip_ws(b, i + 1) == b.len() && seen & 1 != 0 => return Some(f),
            _ => return None,
        }
    }
}

/// A value of a flat object.
enum Flat<'a> {
    Str(&'a str),
    Num(u64),
    Bool(bool),
    Null,
}

/// The string starting with the quote at `i` and the index after its closing
/// quote; `None` for an escape (serde's to decode). The client's hot loop, so
/// it searches with memchr and does not look for raw control characters
/// (invalid in JSON; serde would refuse them, and so does the server's encoder).
fn flat_string(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let len = memchr::memchr2(b'"', b'\\', &b[i + 1..])?;
    if b[i + 1 + len] == b'\\' {
        return None;
    }
    Some((&text[i + 1..i + 1 + len], i + len + 2))
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// What a message's marker says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// The sending process's run tag.
    pub tag: u32,
    /// The sending connection's index.
    pub conn: u32,
    /// The sender's message number (0, 1, 2, …).
    pub n: u32,
    /// Send time, µs since the Unix epoch.
    pub sent_us: u64,
}

impl Marker {
    /// Reads the marker at the front of a message text, if it has one.
    pub fn parse(text: &str) -> Option<Marker> {
        let rest = text.strip_prefix("cf|")?;
        let mut parts = rest.splitn(5, '|');
        let tag = u32::from_str_radix(parts.next()?, 16).ok()?;
        let conn = parts.next()?.parse().ok()?;
        let n = parts.next()?.parse().ok()?;
        let sent_us = parts.next()?.parse().ok()?;
        parts.next()?; // the marker ends with '|'
        Some(Marker { tag, conn, n, sent_us })
    }
}

/// Builds the JSON of one outgoing chat message into `out` (cleared first):
/// `{"type":"chat","username":"cf-<tag>-<conn>","message":"cf|…|xxxx"}` with
/// the text padded with `x` to `payload` bytes (never shorter than the marker).
pub fn chat_json(out: &mut String, m: &Marker, payload: usize) {
    out.clear();
    let _ = write!(out, r#"{{"type":"chat","username":"{}","message":""#, user_name(m.tag, m.conn));
    let start = out.len();
    let _ = write!(out, "cf|{:08x}|{}|{}|{}|", m.tag, m.conn, m.n, m.sent_us);
    let text_len = out.len() - start;
    for _ in text_len..payload {
        out.push('x');
    }
    out.push_str("\"}");
}

/// The user name (and `name=` query value) of a connection.
pub fn user_name(tag: u32, conn: u32) -> String {
    format!("cf-{tag:08x}-{conn}")
}

/// Whether a system notice announces a shutdown (stop sending, expect 1001).
pub fn is_shutdown_notice(message: &str) -> bool {
    message.to_ascii_lowercase().contains("shutting down")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_join_frame() {
        let text = r#"{"type":"system","message":"Connected to pod: p1","podName":"p1","timestamp":"2024-01-01T00:00:00Z",
            "connection":"c-9","room":"cf-0","lastSeq":12,"recovered":true,
            "history":[{"type":"chat","username":"u","message":"a\"b","podName":"p2","room":"cf-0","seq":11,"id":"x"},
                       {"type":"chat","username":"u","message":"c","seq":12}]}"#;
        let f = parse(text).unwrap();
        assert_eq!(f.kind, "system");
        assert_eq!(
            (f.pod.as_deref(), f.room.as_deref(), f.last_seq, f.recovered),
            (Some("p1"), Some("cf-0"), Some(12), Some(true))
        );
        let h = f.history.unwrap();
        assert_eq!(h.iter().map(|c| c.seq.unwrap()).collect::<Vec<_>>(), [11, 12]);
        assert_eq!(h[0].message, "a\"b");
        assert!(matches!(h[1].message, Cow::Borrowed(_)));
    }

    #[test]
    fn chat_error_and_notice_frames() {
        let f = parse(
            r#"{"type":"chat","username":"u","message":"hi","podName":"p","timestamp":"t","room":"r","seq":5,"id":7}"#,
        )
        .unwrap();
        assert_eq!((f.kind.as_ref(), f.seq, f.message.as_deref()), ("chat", Some(5), Some("hi")));
        let f = parse(r#"{"type":"error","code":"rate_limited","message":"slow down"}"#).unwrap();
        assert_eq!((f.kind.as_ref(), f.code.as_deref()), ("error", Some("rate_limited")));
        let f = parse(r#"{"type":"system","message":"Server is shutting down. Please reconnect."}"#).unwrap();
        assert!(f.last_seq.is_none() && is_shutdown_notice(f.message.as_deref().unwrap()));
        assert!(!is_shutdown_notice("Connected to pod: x"));
        assert!(parse("not json").is_err());
        assert!(parse(r#"{"message":"no type"}"#).is_err());
    }

    /// The fast path yields what serde yields, and declines what it cannot judge.
    #[test]
    fn flat_frames_parse_as_serde_does() {
        let same = [
            r#"{"type":"chat","username":"u","message":"cf|01|2|3|4|xx","podName":"p","timestamp":"t","room":"r","seq":5,"id":"p-5"}"#,
            r#"{ "type" : "system", "message":"Connected", "lastSeq": 0, "recovered": false, "podName": null }"#,
            r#"{"type":"error","code":"rate_limited","message":"slow down","extra":true,"n":12}"#,
            r#"{"type":"chat","seq":18446744073709551615}"#,
        ];
        for text in same {
            let fast = parse_flat(text).unwrap_or_else(|| panic!("fast path declined {text}"));
            let slow: Incoming<'_> = serde_json::from_str(text).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text}");
        }
        let declined = [
            r#"{"type":"chat","message":"a\"b","seq":1}"#,   // an escape
            r#"{"type":"system","lastSeq":1,"history":[]}"#, // a nested value
            r#"{"type":"chat","seq":-1}"#,                   // not a u64
            r#"{"type":"chat","seq":1.5}"#,                  // not an integer
            r#"{"type":"chat","seq":"1"}"#,                  // the wrong type
            r#"{"type":"chat","seq":1,"seq":2}"#,            // a duplicate
            r#"{"message":"no type"}"#,                      // no type
            r#"{"type":"chat"} x"#,                          // trailing text
            r#"{"type":"chat","#,                            // truncated
        ];
        for text in declined {
            assert!(parse_flat(text).is_none(), "{text}");
        }
        assert_eq!(parse(r#"{"type":"chat","seq":1.5}"#).map(|f| f.seq).ok(), None);
    }

    #[test]
    fn outgoing_message_round_trips_through_the_marker() {
        let m = Marker { tag: 0xdead_beef, conn: 12, n: 3, sent_us: 1_700_000_000_123_456 };
        let mut out = String::new();
        chat_json(&mut out, &m, 100);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["type"], "chat");
        assert_eq!(v["username"], "cf-deadbeef-12");
        let text = v["message"].as_str().unwrap();
        assert_eq!(text.len(), 100);
        assert!(text.starts_with("cf|deadbeef|12|3|1700000000123456|xx"));
        assert_eq!(Marker::parse(text), Some(m));
        // A payload smaller than the marker yields just the marker.
        chat_json(&mut out, &m, 1);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["message"], "cf|deadbeef|12|3|1700000000123456|");
    }

    #[test]
    fn foreign_texts_have_no_marker() {
        for text in ["hello", "cf|", "cf|zz|1|2|3|", "cf|01|1|2|3", "cf|01|x|2|3|", "xcf|01|1|2|3|"] {
            assert_eq!(Marker::parse(text), None, "{text}");
        }
        assert!(Marker::parse("cf|01|1|2|3|").is_some());
    }
}
