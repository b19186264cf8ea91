//! The checks behind every fuzz target, one function per target, taking
//! the raw bytes of an input. The targets in fuzz_targets/ call them, and
//! so does `cargo test` (server/tests/fuzz_corpus.rs), which feeds them
//! every file of corpus/<target>/: the seeds and the crash inputs found so
//! far (`crash-*`), kept as regression inputs.

#![allow(dead_code)]

use websocket_server::chat::history::{Arrival, Backing, Entry, History};
use websocket_server::chat::protocol::{parse_chat, valid_client_id};
use websocket_server::http::{query, request};
use websocket_server::replica;
use websocket_server::ws::{Decoder, Inflater, Limits, Message, Role};

/// Any bytes as an HTTP request head: never a panic; a complete head never
/// claims more bytes than it was given; routing inputs decode or refuse.
pub fn http_head(data: &[u8]) {
    if let Ok(Some(head)) = request::parse_head(data, 8192) {
        assert!(head.len <= data.len());
        let _ = head.keep_alive();
        let _ = query::join_params(head.query);
        let _ = query::history_params(head.query);
    }
}

/// Decodes `data` delivered in chunks of `chunk` bytes; returns a summary.
fn run(data: &[u8], role: Role, chunk: usize, deflate: bool) -> Vec<String> {
    let limits = Limits { role, max_message: 4096 };
    let mut dec = Decoder::new();
    let mut inflater = Inflater::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        let mut off = 0;
        let len = buf.len();
        loop {
            let inf = if deflate { Some(&mut inflater) } else { None };
            match dec.decode_with(&mut buf[off..], &limits, inf) {
                Ok(None) => break,
                Ok(Some((n, msg))) => {
                    assert!(n > 0 && off + n <= len);
                    off += n;
                    if let Some(m) = msg {
                        if let Message::Text(p) | Message::Binary(p) = &m {
                            assert!(p.as_bytes().len() <= limits.max_message);
                        }
                        out.push(match m {
                            Message::Text(p) => format!("T{:?}", p.as_bytes()),
                            Message::Binary(p) => format!("B{:?}", p.as_bytes()),
                            Message::Ping(p) => format!("P{p:?}"),
                            Message::Pong(p) => format!("O{p:?}"),
                            Message::Close(c) => format!("C{c:?}"),
                        });
                    }
                }
                Err(e) => {
                    out.push(format!("E{}", e.close_code()));
                    return out;
                }
            }
        }
        buf.drain(..off);
    }
    out
}

/// Any bytes as a stream of WebSocket frames, for both roles and split at
/// a fuzzer-chosen point (the first byte): never a panic, never more
/// consumed than given, and the same outcome whether the bytes arrive
/// whole or in two parts; with and without permessage-deflate negotiated
/// (compressed messages inflated by a shared inflater, bounded by the limit).
pub fn ws_decoder(input: &[u8]) {
    let (split, data) = match input.split_first() {
        Some((s, rest)) => (*s, rest),
        None => (0, input),
    };
    for role in [Role::Server, Role::Client] {
        for deflate in [false, true] {
            let whole = run(data, role, data.len(), deflate);
            let pieces = run(data, role, split as usize % 17 + 1, deflate);
            assert_eq!(whole, pieces, "chunking changed the outcome");
        }
    }
}

/// Any text as a client's chat frame: an accepted message or a refusal
/// with a code, never a panic; accepted messages respect the limits.
pub fn chat_input(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match parse_chat(text, "Anonymous", 64) {
        Ok(m) => {
            assert!(!m.message.is_empty() && m.message.len() <= 64);
            assert!(!m.username.is_empty());
            assert!(m.client_id.as_deref().is_none_or(valid_client_id));
        }
        Err(r) => assert!(!r.code.is_empty()),
    }
}

/// What replica mode decodes from Redis: each line of the input is a
/// `SEQ JSON` payload, as it arrives on the pub/sub channel and as it is
/// stored in a room's history list. Never a panic; a payload that decodes
/// has a seq in 1..=i64::MAX (what a Redis counter and MongoDB can hold),
/// encodes back to itself, and frames as JSON carrying its seq; and the
/// sequence of payloads goes through a room's history the way the
/// subscriber takes it (next, duplicate, gap then restart), then through a
/// loader's merge and a resume, without a panic or an overflow.
pub fn replica_input(data: &[u8]) {
    let history = History::new(4, 1 << 16, Backing::Store { deep: true });
    let mut loaded: Vec<(std::sync::Arc<str>, Entry)> = Vec::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(m) = replica::decode(line) else { continue };
        assert!(m.seq >= 1 && m.seq <= i64::MAX as u64, "seq {} accepted", m.seq);
        let again = replica::decode(format!("{} {}", m.seq, replica::encode_fields(&m)).as_bytes());
        assert_eq!(again.as_ref(), Some(&m), "a decoded payload encodes back to itself");
        let json = m.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).expect("a chat frame is JSON");
        assert_eq!(v["seq"].as_u64(), Some(m.seq));
        let room: std::sync::Arc<str> = std::sync::Arc::from(m.room.as_str());
        let entry = Entry::new(m.seq, &json);
        match history.classify(&room, m.seq) {
            Arrival::Next => history.append(&room, entry.clone()),
            Arrival::Duplicate => {}
            Arrival::Gap { after } => {
                assert!(after < m.seq);
                history.restart_after_gap(&room, m.seq);
                history.append(&room, entry.clone());
            }
        }
        let _ = history.snapshot(&room, Some(m.seq.saturating_sub(3)), 4, &[]);
        let _ = history.needs_load(&room, Some(m.seq));
        loaded.push((room, entry));
    }
    for (room, entry) in loaded {
        history.merge_recent(&room, vec![entry]);
        let _ = history.snapshot(&room, Some(0), 4, &[]);
    }
}
