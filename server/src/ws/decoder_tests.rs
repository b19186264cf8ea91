//! Unit tests of the frame decoder (`decoder.rs`).

use super::*;
use crate::ws::{encoder, Inflater};

const SERVER: Limits = Limits { role: Role::Server, max_message: 1 << 16 };
const MASK: [u8; 4] = [0xa1, 0xb2, 0xc3, 0xd4];

fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let op = OpCode::from(opcode);
    let mut f = encoder::frame_with_mask(op, payload, Some(MASK));
    if !fin {
        f[0] &= 0x7f;
    }
    f
}

/// Decodes every frame in `bytes`, returning owned copies of the messages.
fn decode_all(bytes: &[u8], limits: &Limits) -> Result<Vec<(u8, Vec<u8>)>, WsError> {
    let mut buf = bytes.to_vec();
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    let mut off = 0;
    while let Some((n, msg)) = dec.decode(&mut buf[off..], limits)? {
        off += n;
        match msg {
            Some(Message::Text(p)) => out.push((1, p.as_bytes().to_vec())),
            Some(Message::Binary(p)) => out.push((2, p.as_bytes().to_vec())),
            Some(Message::Close(c)) => {
                out.push((8, c.map_or(vec![], |(code, r)| [&code.to_be_bytes()[..], r.as_bytes()].concat())))
            }
            Some(Message::Ping(p)) => out.push((9, p.to_vec())),
            Some(Message::Pong(p)) => out.push((10, p.to_vec())),
            None => {}
        }
    }
    assert_eq!(off, buf.len(), "every byte of complete frames is consumed");
    Ok(out)
}

#[test]
fn single_frame_messages_are_unmasked_in_place() {
    let mut bytes = client_frame(true, 1, b"Hello");
    bytes.extend(client_frame(true, 2, &[0, 1, 2, 255]));
    assert_eq!(decode_all(&bytes, &SERVER).unwrap(), vec![(1, b"Hello".to_vec()), (2, vec![0, 1, 2, 255])]);
}

#[test]
fn short_input_consumes_nothing_at_every_cut() {
    let bytes = client_frame(true, 1, &[b'x'; 300]);
    for cut in 0..bytes.len() {
        let mut buf = bytes[..cut].to_vec();
        assert_eq!(Decoder::new().decode(&mut buf, &SERVER), Ok(None), "cut {cut}");
        assert_eq!(buf, bytes[..cut], "nothing unmasked on short input");
    }
}

#[test]
fn fragments_are_reassembled_with_control_frames_between_them() {
    let mut bytes = client_frame(false, 1, b"Hel");
    bytes.extend(client_frame(true, 9, b"ping!"));
    bytes.extend(client_frame(false, 0, b"lo, "));
    bytes.extend(client_frame(true, 0, b"world"));
    assert_eq!(decode_all(&bytes, &SERVER).unwrap(), vec![(9, b"ping!".to_vec()), (1, b"Hello, world".to_vec())]);
}

#[test]
fn a_code_point_split_across_fragments_is_valid() {
    let euro = "€".as_bytes(); // e2 82 ac
    let mut bytes = client_frame(false, 1, &euro[..1]);
    bytes.extend(client_frame(false, 0, &euro[1..2]));
    bytes.extend(client_frame(true, 0, &euro[2..]));
    assert_eq!(decode_all(&bytes, &SERVER).unwrap(), vec![(1, euro.to_vec())]);
}

#[test]
fn invalid_utf8_fails_on_the_first_fragment_that_shows_it() {
    let mut dec = Decoder::new();
    let mut first = client_frame(false, 1, b"valid ");
    assert!(dec.decode(&mut first, &SERVER).unwrap().is_some());
    let mut bad = client_frame(false, 0, &[0xce, 0xba, 0xf4, 0x90, 0x80, 0x80]); // > U+10FFFF
    assert_eq!(dec.decode(&mut bad, &SERVER), Err(WsError::InvalidUtf8));
    // An incomplete code point at the end of the final frame is invalid.
    assert_eq!(decode_all(&client_frame(true, 1, &[0xe2, 0x82]), &SERVER), Err(WsError::InvalidUtf8));
    // Whole-message invalid text.
    assert_eq!(decode_all(&client_frame(true, 1, &[0xff]), &SERVER), Err(WsError::InvalidUtf8));
}

#[test]
fn invalid_utf8_in_a_frame_still_arriving_fails_at_the_first_bad_byte() {
    let mut payload = "κόσμε".as_bytes().to_vec();
    payload.extend([0xed, 0xa0, 0x80]); // a surrogate: invalid
    payload.extend(b"more text that has not arrived yet");
    let frame = client_frame(true, 1, &payload);
    let header_len = 6;
    let bad_at = header_len + "κόσμε".len() + 1;
    let mut dec = Decoder::new();
    // Byte by byte, as Autobahn 6.4.3 sends it: fine until the bad byte, which fails.
    for end in 1..bad_at {
        let mut part = frame[..end].to_vec();
        assert_eq!(dec.decode(&mut part, &SERVER), Ok(None), "end {end}");
        assert_eq!(part, frame[..end], "the buffer is left as it was");
    }
    let mut part = frame[..bad_at + 1].to_vec();
    assert_eq!(dec.decode(&mut part, &SERVER), Err(WsError::InvalidUtf8));
}

#[test]
fn a_valid_text_frame_arriving_in_pieces_decodes_whole() {
    let text = "€uro κόσμε 😀".repeat(20);
    let frame = client_frame(true, 1, text.as_bytes());
    for step in [1, 2, 3, 5, 7, 64] {
        let mut dec = Decoder::new();
        let mut buf = Vec::new();
        let mut got = None;
        for piece in frame.chunks(step) {
            buf.extend_from_slice(piece);
            if let Some((n, Some(Message::Text(p)))) = dec.decode(&mut buf, &SERVER).unwrap() {
                assert_eq!(n, frame.len());
                got = Some(p.as_text().to_string());
            }
        }
        assert_eq!(got.as_deref(), Some(text.as_str()), "step {step}");
    }
    // A continuation whose first bytes finish the previous fragment's code point.
    let euro = "€".as_bytes();
    let mut dec = Decoder::new();
    let mut first = client_frame(false, 1, &euro[..1]);
    assert!(dec.decode(&mut first, &SERVER).unwrap().is_some());
    let cont = client_frame(true, 0, &[&euro[1..], b"abc".as_slice()].concat());
    let mut buf = Vec::new();
    for (i, b) in cont.iter().enumerate() {
        buf.push(*b);
        let r = dec.decode(&mut buf, &SERVER).unwrap();
        if i + 1 == cont.len() {
            assert!(matches!(r, Some((_, Some(Message::Text(_))))));
        } else {
            assert_eq!(r, None);
        }
    }
}

#[test]
fn sequencing_rules() {
    assert_eq!(decode_all(&client_frame(true, 0, b"x"), &SERVER), Err(WsError::UnexpectedContinuation));
    let mut bytes = client_frame(false, 1, b"a");
    bytes.extend(client_frame(true, 1, b"b"));
    assert_eq!(decode_all(&bytes, &SERVER), Err(WsError::ExpectedContinuation));
}

#[test]
fn masking_rules_depend_on_the_role() {
    let unmasked = encoder::frame(OpCode::Data(Data::Text), b"hi");
    assert_eq!(decode_all(&unmasked, &SERVER), Err(WsError::UnmaskedFrame));
    let client = Limits { role: Role::Client, max_message: 1 << 16 };
    assert_eq!(decode_all(&unmasked, &client).unwrap(), vec![(1, b"hi".to_vec())]);
    assert_eq!(decode_all(&client_frame(true, 1, b"hi"), &client), Err(WsError::MaskedFrame));
}

#[test]
fn rsv_bits_without_an_extension_fail() {
    let mut f = client_frame(true, 1, b"x");
    f[0] |= 0x40;
    assert_eq!(decode_all(&f, &SERVER), Err(WsError::ReservedBits));
}

#[test]
fn size_limit_is_enforced_at_the_header_before_the_payload_arrives() {
    let limits = Limits { role: Role::Server, max_message: 100 };
    let f = client_frame(true, 2, &[0; 101]);
    // Only the header is present: already refused.
    let mut head = f[..8].to_vec();
    assert_eq!(Decoder::new().decode(&mut head, &limits), Err(WsError::MessageTooBig));
    // Fragments adding up past the limit.
    let mut bytes = client_frame(false, 2, &[0; 60]);
    bytes.extend(client_frame(true, 0, &[0; 41]));
    assert_eq!(decode_all(&bytes, &limits), Err(WsError::MessageTooBig));
    // Exactly at the limit is fine.
    assert_eq!(decode_all(&client_frame(true, 2, &[7; 100]), &limits).unwrap().len(), 1);
}

#[test]
fn close_payload_rules() {
    assert_eq!(decode_all(&client_frame(true, 8, b""), &SERVER).unwrap(), vec![(8, vec![])]);
    assert_eq!(decode_all(&client_frame(true, 8, &[3]), &SERVER), Err(WsError::InvalidClosePayload));
    for bad in [0u16, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000, 65535] {
        assert_eq!(
            decode_all(&client_frame(true, 8, &bad.to_be_bytes()), &SERVER),
            Err(WsError::InvalidCloseCode(bad)),
            "{bad}"
        );
    }
    for good in [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
        assert!(decode_all(&client_frame(true, 8, &good.to_be_bytes()), &SERVER).is_ok(), "{good}");
    }
    let mut bad_reason = 1000u16.to_be_bytes().to_vec();
    bad_reason.extend([0xce, 0xba, 0xe1, 0xbd]);
    assert_eq!(decode_all(&client_frame(true, 8, &bad_reason), &SERVER), Err(WsError::InvalidCloseReason));
}

/// A client frame of a compressed message: `payload` already compressed.
fn compressed_client_frame(fin: bool, opcode: u8, rsv1: bool, payload: &[u8]) -> Vec<u8> {
    let mut f = client_frame(fin, opcode, payload);
    if rsv1 {
        f[0] |= 0x40;
    }
    f
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut z = Vec::new();
    assert!(crate::ws::deflate::compress(data, &mut z));
    z
}

/// Decodes every frame with an inflater (permessage-deflate negotiated).
fn decode_all_deflate(bytes: &[u8], limits: &Limits) -> Result<Vec<(u8, Vec<u8>)>, WsError> {
    let mut buf = bytes.to_vec();
    let mut dec = Decoder::new();
    let mut inf = Inflater::new();
    let mut out = Vec::new();
    let mut off = 0;
    while let Some((n, msg)) = dec.decode_with(&mut buf[off..], limits, Some(&mut inf))? {
        off += n;
        match msg {
            Some(Message::Text(p)) => out.push((1, p.as_bytes().to_vec())),
            Some(Message::Binary(p)) => out.push((2, p.as_bytes().to_vec())),
            Some(Message::Ping(p)) => out.push((9, p.to_vec())),
            Some(_) => out.push((0, vec![])),
            None => {}
        }
    }
    Ok(out)
}

#[test]
fn compressed_messages_are_inflated_single_or_fragmented() {
    let text = "κόσμε ".repeat(50);
    let z = deflate(text.as_bytes());
    let single = compressed_client_frame(true, 1, true, &z);
    assert_eq!(decode_all_deflate(&single, &SERVER).unwrap(), vec![(1, text.as_bytes().to_vec())]);
    // RSV1 on the first fragment only; a ping between fragments; uncompressed messages next to it.
    let (a, b) = z.split_at(z.len() / 2);
    let mut bytes = compressed_client_frame(false, 1, true, a);
    bytes.extend(client_frame(true, 9, b"p"));
    bytes.extend(compressed_client_frame(true, 0, false, b));
    bytes.extend(client_frame(true, 2, &[1, 2, 3]));
    bytes.extend(compressed_client_frame(true, 2, true, &deflate(&[0u8; 1000])));
    assert_eq!(
        decode_all_deflate(&bytes, &SERVER).unwrap(),
        vec![(9, b"p".to_vec()), (1, text.as_bytes().to_vec()), (2, vec![1, 2, 3]), (2, vec![0; 1000])]
    );
}

#[test]
fn rsv1_is_a_protocol_error_where_the_rfc_forbids_it() {
    let z = deflate(b"hello hello");
    // Without the extension negotiated.
    assert_eq!(decode_all(&compressed_client_frame(true, 1, true, &z), &SERVER), Err(WsError::ReservedBits));
    // On a control frame.
    assert_eq!(decode_all_deflate(&compressed_client_frame(true, 9, true, b""), &SERVER), Err(WsError::ReservedBits));
    // On a continuation frame.
    let mut bytes = compressed_client_frame(false, 1, true, &z[..2]);
    bytes.extend(compressed_client_frame(true, 0, true, &z[2..]));
    assert_eq!(decode_all_deflate(&bytes, &SERVER), Err(WsError::ReservedBits));
    // RSV2/RSV3 stay reserved.
    let mut f = compressed_client_frame(true, 1, true, &z);
    f[0] |= 0x20;
    assert_eq!(decode_all_deflate(&f, &SERVER), Err(WsError::ReservedBits));
    // Garbage in a compressed message.
    assert_eq!(
        decode_all_deflate(&compressed_client_frame(true, 2, true, &[0xff; 8]), &SERVER),
        Err(WsError::InvalidCompressedData)
    );
}

#[test]
fn the_size_limit_applies_to_the_inflated_message() {
    let limits = Limits { role: Role::Server, max_message: 4096 };
    let bomb = deflate(&vec![b'a'; 2 << 20]);
    assert!(bomb.len() < 4096, "small on the wire: {}", bomb.len());
    assert_eq!(
        decode_all_deflate(&compressed_client_frame(true, 1, true, &bomb), &limits),
        Err(WsError::MessageTooBig)
    );
    // Fragmented the same.
    let mut bytes = compressed_client_frame(false, 2, true, &bomb[..10]);
    bytes.extend(compressed_client_frame(true, 0, false, &bomb[10..]));
    assert_eq!(decode_all_deflate(&bytes, &limits), Err(WsError::MessageTooBig));
    // Exactly at the limit is fine.
    let ok = deflate(&[b'a'; 4096]);
    assert_eq!(decode_all_deflate(&compressed_client_frame(true, 1, true, &ok), &limits).unwrap()[0].1.len(), 4096);
    // Inflated text is validated.
    let bad = deflate(&[0xff, 0xfe]);
    assert_eq!(decode_all_deflate(&compressed_client_frame(true, 1, true, &bad), &limits), Err(WsError::InvalidUtf8));
}

#[test]
fn payload_as_text_only_for_valid_utf8() {
    assert_eq!(Payload::Borrowed(b"ok").as_text(), "ok");
    assert_eq!(Payload::Owned(vec![0xff]).as_text(), "");
}
