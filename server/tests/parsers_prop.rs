//! Property tests of the parsers (run by every `cargo test`; the cargo-fuzz
//! targets in server/fuzz explore further): arbitrary input never panics,
//! and valid input decodes the same however it is split across reads.

use proptest::prelude::*;
use websocket_server::chat::protocol::parse_chat;
use websocket_server::http::{query, request};
use websocket_server::ws::{encoder, Decoder, Limits, Message, OpCode, Role};

/// Decodes `data` delivered in the given chunk sizes; a summary of the outcome.
fn decode_in_chunks(data: &[u8], role: Role, cuts: &[usize]) -> Vec<String> {
    let limits = Limits { role, max_message: 1 << 16 };
    let mut dec = Decoder::new();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut cuts = cuts.iter().cycle();
    while pos < data.len() {
        let step = (*cuts.next().unwrap()).clamp(1, data.len() - pos);
        buf.extend_from_slice(&data[pos..pos + step]);
        pos += step;
        let mut off = 0;
        let len = buf.len();
        loop {
            match dec.decode(&mut buf[off..], &limits) {
                Ok(None) => break,
                Ok(Some((n, msg))) => {
                    assert!(n > 0 && off + n <= len, "consumed within bounds");
                    off += n;
                    match msg {
                        Some(Message::Text(p)) => out.push(format!("T:{}", p.as_text())),
                        Some(Message::Binary(p)) => out.push(format!("B:{:?}", p.as_bytes())),
                        Some(Message::Ping(p)) => out.push(format!("P:{p:?}")),
                        Some(Message::Pong(p)) => out.push(format!("O:{p:?}")),
                        Some(Message::Close(c)) => out.push(format!("C:{c:?}")),
                        None => {}
                    }
                }
                Err(e) => {
                    out.push(format!("E:{}", e.close_code()));
                    return out;
                }
            }
        }
        buf.drain(..off);
    }
    out
}

/// A valid client frame sequence: (kind, payload, fragment count).
fn frames() -> impl Strategy<Value = Vec<(u8, Vec<u8>, usize)>> {
    prop::collection::vec(
        prop_oneof![
            (Just(1u8), "[a-zé€😀 ]{0,300}".prop_map(String::into_bytes), 1usize..4),
            (Just(2u8), prop::collection::vec(any::<u8>(), 0..300), 1usize..4),
            (Just(9u8), prop::collection::vec(any::<u8>(), 0..125), Just(1usize)),
        ],
        1..8,
    )
}

/// Encodes `frames` as masked client frames, fragmenting data messages.
fn encode(frames: &[(u8, Vec<u8>, usize)], mask: [u8; 4]) -> (Vec<u8>, Vec<String>) {
    let mut bytes = Vec::new();
    let mut expect = Vec::new();
    for (kind, payload, parts) in frames {
        let chunk = payload.len().div_ceil(*parts).max(1);
        let pieces: Vec<&[u8]> = if payload.is_empty() { vec![&payload[..]] } else { payload.chunks(chunk).collect() };
        for (i, piece) in pieces.iter().enumerate() {
            let opcode = if i == 0 { *kind } else { 0 };
            let mut f = encoder::frame_with_mask(OpCode::from(opcode), piece, Some(mask));
            if i + 1 < pieces.len() {
                f[0] &= 0x7f; // not final
            }
            bytes.extend(f);
        }
        expect.push(match kind {
            1 => format!("T:{}", String::from_utf8(payload.clone()).unwrap()),
            2 => format!("B:{payload:?}"),
            _ => format!("P:{payload:?}"),
        });
    }
    (bytes, expect)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn http_heads_never_panic(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(Some(head)) = request::parse_head(&data, 8192) {
            prop_assert!(head.len <= data.len());
            let _ = query::join_params(head.query);
            let _ = query::history_params(head.query);
        }
    }

    #[test]
    fn http_heads_with_a_valid_prefix_never_panic(tail in prop::collection::vec(any::<u8>(), 0..512)) {
        let mut data = b"GET /ws?room=a HTTP/1.1\r\nHost: x\r\n".to_vec();
        data.extend(tail);
        let _ = request::parse_head(&data, 8192);
    }

    #[test]
    fn queries_never_panic(q in ".{0,200}") {
        let _ = query::join_params(&q);
        let _ = query::history_params(&q);
    }

    #[test]
    fn chat_input_never_panics(text in ".{0,300}") {
        if let Ok(m) = parse_chat(&text, "x", 100) {
            prop_assert!(!m.message.is_empty() && m.message.len() <= 100);
        }
    }

    #[test]
    fn arbitrary_frames_never_panic_and_chunking_never_changes_the_outcome(
        data in prop::collection::vec(any::<u8>(), 0..1024),
        cuts in prop::collection::vec(1usize..40, 1..8),
    ) {
        for role in [Role::Server, Role::Client] {
            prop_assert_eq!(decode_in_chunks(&data, role, &[data.len().max(1)]), decode_in_chunks(&data, role, &cuts));
        }
    }

    #[test]
    fn valid_frames_decode_to_their_messages_however_split(
        frames in frames(),
        mask in any::<[u8; 4]>(),
        cuts in prop::collection::vec(1usize..64, 1..8),
    ) {
        let (bytes, expect) = encode(&frames, mask);
        prop_assert_eq!(decode_in_chunks(&bytes, Role::Server, &cuts), expect);
    }
}
