//! permessage-deflate (RFC 7692) against the real server over real sockets:
//! negotiation, compressed broadcasts next to plain ones, compressed client
//! messages, the limit on the inflated size, RSV1 rules, and WS_COMPRESSION=0.
//! The client is a raw socket with the crate's own codec, so every frame's
//! RSV1 bit is visible.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;

use common::*;
use serde_json::Value;
use websocket_server::ws::{encoder, Data, Decoder, Inflater, Limits, Message, OpCode, Role};

/// One frame as received: whether it was compressed, and what it carried.
#[derive(Debug)]
enum Got {
    Text { compressed: bool, text: String },
    Close(u16),
    Other,
}

struct RawWs {
    s: TcpStream,
    buf: Vec<u8>,
    dec: Decoder,
    inf: Inflater,
    /// The `Sec-WebSocket-Extensions` of the 101 response, if any.
    extensions: Option<String>,
}

const MASK: [u8; 4] = [1, 2, 3, 4];

impl RawWs {
    fn open(port: u16, path: &str, offers: &[&str]) -> RawWs {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let headers: String = offers.iter().map(|o| format!("Sec-WebSocket-Extensions: {o}\r\n")).collect();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n"
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "closed during the handshake");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let extensions = head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: ").or(l.strip_prefix("sec-websocket-extensions: ")))
            .map(str::to_string);
        buf.drain(..head_end);
        RawWs { s, buf, dec: Decoder::new(), inf: Inflater::new(), extensions }
    }

    fn send_text(&mut self, text: &str, compress: bool) {
        let op = OpCode::Data(Data::Text);
        let frame = if compress {
            encoder::compressed_frame(op, text.as_bytes(), Some(MASK))
        } else {
            encoder::frame_with_mask(op, text.as_bytes(), Some(MASK))
        };
        self.s.write_all(&frame).unwrap();
    }

    fn send_raw(&mut self, frame: &[u8]) {
        self.s.write_all(frame).unwrap();
    }

    fn recv(&mut self) -> Got {
        let limits = Limits { role: Role::Client, max_message: 1 << 24 };
        loop {
            let compressed = self.buf.first().is_some_and(|b| b & 0x40 != 0);
            let decoded = self.dec.decode_with(&mut self.buf, &limits, Some(&mut self.inf)).unwrap();
            if let Some((n, msg)) = decoded {
                let got = match msg {
                    Some(Message::Text(p)) => Some(Got::Text { compressed, text: p.as_text().to_string() }),
                    Some(Message::Close(c)) => Some(Got::Close(c.map_or(1005, |(code, _)| code))),
                    Some(_) => Some(Got::Other),
                    None => None,
                };
                self.buf.drain(..n);
                if let Some(g) = got {
                    return g;
                }
                continue;
            }
            let mut chunk = [0u8; 65536];
            let n = self.s.read(&mut chunk).expect("a frame within the wait");
            if n == 0 {
                return Got::Close(1006);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next text frame as JSON, with whether it came compressed.
    fn recv_json(&mut self) -> (bool, Value) {
        match self.recv() {
            Got::Text { compressed, text } => (compressed, serde_json::from_str(&text).unwrap()),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    fn recv_close(&mut self) -> u16 {
        loop {
            if let Got::Close(code) = self.recv() {
                return code;
            }
        }
    }
}

const CHROMIUM: &str = "permessage-deflate; client_max_window_bits";
const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

fn chat(message: &str) -> String {
    serde_json::json!({"type": "chat", "message": message}).to_string()
}

#[test]
fn a_broadcast_goes_compressed_to_deflate_clients_and_plain_to_others() {
    let server = Server::start(&[]);
    let mut zipped = RawWs::open(server.port, "/ws?room=z&name=zed", &[CHROMIUM]);
    let mut plain = RawWs::open(server.port, "/ws?room=z&name=pat", &[]);
    assert_eq!(zipped.extensions.as_deref(), Some(AGREED));
    assert_eq!(plain.extensions, None);
    assert_eq!(zipped.recv_json().1["type"], "system", "the welcome");
    assert_eq!(plain.recv_json().1["type"], "system");
    assert_eq!(server.metric("websocket_deflate_connections_active"), 1.0);

    // A compressed message from the client is inflated and published.
    let text = "the quick brown fox jumps over the lazy dog, ".repeat(4);
    zipped.send_text(&chat(&text), true);
    let (c1, m1) = zipped.recv_json();
    let (c2, m2) = plain.recv_json();
    assert!(c1 && !c2, "compressed only where negotiated");
    assert_eq!(m1, m2, "the same message either way");
    assert_eq!(m1["message"], text.as_str());
    assert_eq!(m1["username"], "zed");

    // An uncompressed message is fine too (compression is per message).
    zipped.send_text(&chat("plain one"), false);
    assert_eq!(zipped.recv_json().1["message"], "plain one");
    assert_eq!(plain.recv_json().1["message"], "plain one");
    assert!(server.metric("websocket_compressed_frames_sent_total") >= 1.0);
}

#[test]
fn short_messages_go_uncompressed() {
    let server = Server::start(&[("COMPRESSION_MIN_BYTES", "100000")]);
    let mut ws = RawWs::open(server.port, "/ws?room=s&name=s", &[CHROMIUM]);
    assert_eq!(ws.extensions.as_deref(), Some(AGREED));
    ws.recv_json();
    ws.send_text(&chat(&"long but under the threshold ".repeat(10)), true);
    let (compressed, m) = ws.recv_json();
    assert!(!compressed);
    assert_eq!(m["type"], "chat");
    assert_eq!(server.metric("websocket_compressed_frames_sent_total"), 0.0);
}

#[test]
fn a_limited_server_window_gets_compressed_frames_only_for_short_messages() {
    let server = Server::start(&[("ECHO_ROUTE", "1"), ("COMPRESSION_MIN_BYTES", "16")]);
    let mut ws = RawWs::open(server.port, "/echo", &["permessage-deflate; server_max_window_bits=9"]);
    assert_eq!(ws.extensions.as_deref(), Some(&format!("{AGREED}; server_max_window_bits=9")[..]));
    let short = "abcdefgh".repeat(20); // 160 bytes: within any window
    let long = "abcdefgh".repeat(100); // 800 bytes: sent plain
    ws.send_text(&short, true);
    ws.send_text(&long, true);
    match (ws.recv(), ws.recv()) {
        (Got::Text { compressed: true, text: a }, Got::Text { compressed: false, text: b }) => {
            assert_eq!((a, b), (short, long));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_zip_bomb_is_closed_with_1009() {
    let server = Server::start(&[("ECHO_ROUTE", "1"), ("MAX_MESSAGE_BYTES", "8192"), ("MAX_CHAT_BYTES", "1000")]);
    let mut ws = RawWs::open(server.port, "/echo", &[CHROMIUM]);
    // 1 MiB of zeros: about 1 KiB on the wire, 128 times the limit inflated.
    let frame = encoder::compressed_frame(OpCode::Data(Data::Binary), &vec![0u8; 1 << 20], Some(MASK));
    assert!(frame.len() < 8192);
    ws.send_raw(&frame);
    assert_eq!(ws.recv_close(), 1009);
    eventually("the close counted as too_big", || server.metric("websocket_closes_total{reason=\"too_big\"}") == 1.0);
}

#[test]
fn rsv1_without_negotiation_or_on_a_control_frame_is_1002() {
    let server = Server::start(&[("ECHO_ROUTE", "1"), ("WS_COMPRESSION", "0")]);
    // Compression off: the offer is ignored, and a compressed frame is a protocol error.
    let mut off = RawWs::open(server.port, "/echo", &[CHROMIUM]);
    assert_eq!(off.extensions, None);
    off.send_text("hello hello hello", true);
    assert_eq!(off.recv_close(), 1002);

    let server = Server::start(&[("ECHO_ROUTE", "1")]);
    let mut ws = RawWs::open(server.port, "/echo", &[CHROMIUM]);
    let mut ping = encoder::frame_with_mask(OpCode::Control(websocket_server::ws::Control::Ping), b"", Some(MASK));
    ping[0] |= 0x40;
    ws.send_raw(&ping);
    assert_eq!(ws.recv_close(), 1002);
}

#[test]
fn malformed_offers_are_declined_and_counted() {
    let server = Server::start(&[("ECHO_ROUTE", "1")]);
    let mut ws = RawWs::open(
        server.port,
        "/echo",
        &["permessage-deflate; server_max_window_bits=20", "permessage-deflate; client_no_context_takeover=1"],
    );
    assert_eq!(ws.extensions, None);
    assert_eq!(server.metric("websocket_deflate_offers_declined_total"), 2.0);
    ws.send_text("still a WebSocket", false);
    assert!(matches!(ws.recv(), Got::Text { compressed: false, text } if text == "still a WebSocket"));
    // The second of two offers, across two headers, is taken when the first is declined.
    let ws = RawWs::open(server.port, "/echo", &["permessage-deflate; foo", "x-other, permessage-deflate"]);
    assert_eq!(ws.extensions.as_deref(), Some(AGREED));
}
