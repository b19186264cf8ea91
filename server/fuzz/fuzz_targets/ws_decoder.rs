//! Any bytes as a stream of WebSocket frames, for both roles and split at
//! a fuzzer-chosen point: never a panic, never more consumed than given,
//! and the same outcome whether the bytes arrive whole or in two parts;
//! with and without permessage-deflate negotiated (compressed messages are
//! inflated with a shared inflater, its output bounded by the limit).
#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket_server::ws::{Decoder, Inflater, Limits, Message, Role};

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

fuzz_target!(|input: (u8, &[u8])| {
    let (split, data) = input;
    for role in [Role::Server, Role::Client] {
        for deflate in [false, true] {
            let whole = run(data, role, data.len(), deflate);
            let pieces = run(data, role, split as usize % 17 + 1, deflate);
            assert_eq!(whole, pieces, "chunking changed the outcome");
        }
    }
});
