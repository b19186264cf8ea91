//! Any bytes as a stream of WebSocket frames, for both roles and split at
//! a fuzzer-chosen point: never a panic, never more consumed than given,
//! and the same outcome whether the bytes arrive whole or in two parts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use websocket_server::ws::{Decoder, Limits, Message, Role};

/// Decodes `data` delivered in chunks of `chunk` bytes; returns a summary.
fn run(data: &[u8], role: Role, chunk: usize) -> Vec<String> {
    let limits = Limits { role, max_message: 4096 };
    let mut dec = Decoder::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut out = Vec::new();
    for piece in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        let mut off = 0;
        let len = buf.len();
        loop {
            match dec.decode(&mut buf[off..], &limits) {
                Ok(None) => break,
                Ok(Some((n, msg))) => {
                    assert!(n > 0 && off + n <= len);
                    off += n;
                    if let Some(m) = msg {
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
        let whole = run(data, role, data.len());
        let pieces = run(data, role, split as usize % 17 + 1);
        assert_eq!(whole, pieces, "chunking changed the outcome");
    }
});
