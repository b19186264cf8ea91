//! Bad input and load get a clear answer: error frames, close codes and
//! counters — never a crash, a hang or unbounded memory.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;
use websocket_server::ws::{encoder, Data, OpCode};

#[test]
fn bad_chat_frames_get_error_frames_and_the_connection_stays_open() {
    let server = Server::start(&[("MAX_CHAT_BYTES", "10")]);
    let (mut ws, _) = join(&server, "room=e");
    let cases = [
        ("not json", "bad_json"),
        (r#"{"type":"join"}"#, "unknown_type"),
        (r#"{"type":"chat"}"#, "bad_message"),
        (r#"{"type":"chat","message":"12345678901"}"#, "too_long"),
        (r#"{"type":"chat","message":"x","username":""}"#, "bad_username"),
    ];
    for (frame, code) in cases {
        ws.send(Message::text(frame)).unwrap();
        let v = recv_json(&mut ws);
        assert_eq!((v["type"].as_str(), v["code"].as_str()), (Some("error"), Some(code)), "{frame}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ws.send(Message::binary(vec![1, 2, 3])).unwrap();
    assert_eq!(recv_json(&mut ws)["code"], "unsupported");
    send_chat(&mut ws, "still ok");
    assert_eq!(recv_chats(&mut ws, 1), vec![(1, "still ok".to_string())]);
    assert_eq!(server.metric("websocket_messages_rejected_total{code=\"too_long\"}"), 1.0);
}

#[test]
fn rate_limit_answers_then_closes_sustained_abuse_with_1008() {
    let server = Server::start(&[("RATE_LIMIT", "1"), ("RATE_BURST", "3")]);
    let (mut ws, _) = join(&server, "room=rl");
    for i in 0..4 {
        send_chat(&mut ws, &format!("m{i}"));
    }
    let mut chats = 0;
    let mut limited = 0;
    for _ in 0..4 {
        let v = recv_json(&mut ws);
        match v["type"].as_str() {
            Some("chat") => chats += 1,
            Some("error") => {
                assert_eq!(v["code"], "rate_limited");
                limited += 1;
            }
            _ => panic!("{v}"),
        }
    }
    assert_eq!((chats, limited), (3, 1), "the burst passes, the 4th is refused");
    // Ten refusals in a row: closed with 1008.
    for i in 0..12 {
        send_chat(&mut ws, &format!("flood {i}"));
    }
    assert_eq!(recv_close(&mut ws), 1008);
    eventually("rate-limit close counted", || server.metric("websocket_closes_total{reason=\"rate_limit\"}") == 1.0);
}

#[test]
fn a_slow_consumer_is_closed_and_others_are_not_stalled() {
    let server = Server::start(&[
        ("MAX_OUTBOUND_BYTES", "262144"),
        ("RATE_LIMIT", "100000"),
        ("RATE_BURST", "100000"),
        ("MAX_CHAT_BYTES", "4000"),
    ]);
    // A client with a tiny receive buffer that never reads after its welcome.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(&std::net::SocketAddr::from(([127, 0, 0, 1], server.port)).into()).unwrap();
    let stream: TcpStream = sock.into();
    let (mut slow, _) = tungstenite::client(format!("ws://127.0.0.1:{}/ws?room=slow", server.port), stream).unwrap();
    let _ = slow.read();

    let (mut fast, _) = join(&server, "room=slow");
    // The sender is a member too: it drains its own echoes on a second handle.
    let mut sender = raw_upgrade(&server, "/ws?room=slow");
    let mut drain = sender.try_clone().unwrap();
    std::thread::spawn(move || std::io::copy(&mut drain, &mut std::io::sink()));
    let payload = "x".repeat(3900);
    let total = 2000; // ~8 MB per receiver: more than the kernel buffers of the slow one absorb
                      // The sender never runs more than AHEAD messages (~125 KB, half the
                      // bound) ahead of the fast reader, so the fast one stays under its bound
                      // however the threads are scheduled on a loaded machine.
    const AHEAD: u64 = 32;
    let read = Arc::new(AtomicU64::new(0));
    let progress = Arc::clone(&read);
    let reader = std::thread::spawn(move || {
        let mut last = 0;
        while last < total as u64 {
            if let Message::Text(t) = read_frame(&mut fast).expect("fast reader is never closed") {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                assert_eq!(v["seq"].as_u64(), Some(last + 1), "no gap");
                last += 1;
                progress.store(last, Ordering::Release);
            }
        }
        last
    });
    let frame = encoder::frame_with_mask(
        OpCode::Data(Data::Text),
        serde_json::json!({"type": "chat", "message": payload}).to_string().as_bytes(),
        Some([7, 7, 7, 7]),
    );
    let waiting = Instant::now();
    for i in 0..total as u64 {
        while i >= read.load(Ordering::Acquire) + AHEAD {
            assert!(
                waiting.elapsed() < Duration::from_secs(60),
                "the fast reader stalled at {}",
                read.load(Ordering::Acquire)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        sender.write_all(&frame).unwrap();
    }
    assert_eq!(reader.join().unwrap(), total as u64, "the fast reader got everything");
    // The slow one was closed: reading now, it gets what the kernel held,
    // then the 1008 (its unstarted frames were dropped). Reading completes
    // the close handshake, so the close is counted without waiting for the
    // server's close timeout.
    let closed_with = loop {
        match slow.read() {
            Ok(Message::Close(f)) => break f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("the slow consumer's stream ended without a close frame: {e}"),
        }
    };
    assert_eq!(closed_with, Some(1008), "the slow consumer is closed with 1008");
    slow.flush().unwrap(); // tungstenite's answering close frame
    removed_promptly("slow consumer closed", || {
        server.metric("websocket_closes_total{reason=\"slow_consumer\"}") == 1.0
    });
    eventually("its queue released", || server.metric("websocket_outbound_queued_bytes") < 300_000.0);
}

#[test]
fn protocol_violations_close_with_the_rfc_code() {
    let server = Server::start(&[("MAX_MESSAGE_BYTES", "1000"), ("MAX_CHAT_BYTES", "500")]);
    // An unmasked client frame: 1002.
    let mut raw = raw_upgrade(&server, "/ws?room=p");
    raw.write_all(&encoder::frame(OpCode::Data(Data::Text), b"{}")).unwrap();
    assert_eq!(read_close_code(&mut raw), Some(1002));
    // A frame over MAX_MESSAGE_BYTES: 1009, decided at the header.
    let mut raw = raw_upgrade(&server, "/ws?room=p");
    let big = encoder::frame_with_mask(OpCode::Data(Data::Text), &vec![b'a'; 2000], Some([1, 2, 3, 4]));
    raw.write_all(&big[..8]).unwrap();
    assert_eq!(read_close_code(&mut raw), Some(1009));
    // Invalid UTF-8: 1007.
    let mut raw = raw_upgrade(&server, "/ws?room=p");
    raw.write_all(&encoder::frame_with_mask(OpCode::Data(Data::Text), &[0xff, 0xfe], Some([9, 9, 9, 9]))).unwrap();
    assert_eq!(read_close_code(&mut raw), Some(1007));
    eventually("protocol errors counted", || {
        server.metric("websocket_protocol_errors_total{kind=\"protocol\"}") == 1.0
            && server.metric("websocket_protocol_errors_total{kind=\"too_big\"}") == 1.0
            && server.metric("websocket_protocol_errors_total{kind=\"invalid_utf8\"}") == 1.0
    });
}

#[test]
fn silent_clients_are_pinged_then_closed() {
    let server = Server::start(&[("PING_INTERVAL", "1")]);
    // tungstenite answers pings while it reads: this client keeps reading and stays.
    let (mut alive, _) = join(&server, "room=ping");
    let alive_reader = std::thread::spawn(move || recv_chats(&mut alive, 1)[0].1.clone());
    // A raw client that never answers.
    let mut dead = raw_upgrade(&server, "/ws?room=ping");
    let start = Instant::now();
    let mut saw_ping = false;
    let mut close = None;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while start.elapsed() < Duration::from_secs(6) && close.is_none() {
        match dead.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        let mut off = 0;
        while let Some((h, hl)) = websocket_server::ws::Header::parse(&buf[off..]).unwrap() {
            let end = off + hl + h.payload_len as usize;
            if end > buf.len() {
                break;
            }
            match u8::from(h.opcode) {
                9 => saw_ping = true,
                8 => close = Some(u16::from_be_bytes([buf[off + hl], buf[off + hl + 1]])),
                _ => {}
            }
            off = end;
        }
        buf.drain(..off);
    }
    assert!(saw_ping, "a silent client is pinged");
    assert_eq!(close, Some(1001), "and closed after twice the interval");
    // The live client answered its pings and is still served.
    let (mut other, _) = join(&server, "room=ping");
    send_chat(&mut other, "still here?");
    assert_eq!(alive_reader.join().unwrap(), "still here?");
    eventually("timeout close counted", || server.metric("websocket_closes_total{reason=\"timeout\"}") == 1.0);
}

#[test]
fn a_client_close_is_echoed_and_counted() {
    let server = Server::start(&[]);
    let (mut ws, _) = join(&server, "room=bye");
    ws.close(Some(tungstenite::protocol::CloseFrame { code: 4001u16.into(), reason: "done".into() })).unwrap();
    let echoed = loop {
        match read_frame(&mut ws) {
            Ok(Message::Close(f)) => break f.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(echoed, Some(4001));
    removed_promptly("close counted", || server.metric("websocket_closes_total{reason=\"client\"}") == 1.0);
    eventually("connection gone", || server.metric("websocket_connections_active") == 0.0);
}

/// Waits for `done` after a close handshake the client completed without
/// closing its socket: the server removes the connection (closing TCP
/// first, RFC 6455 §7.1.1) at once, not at its 5 s close timeout.
fn removed_promptly(what: &str, done: impl FnMut() -> bool) {
    let started = Instant::now();
    eventually(what, done);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{what} took {:?}: the server waited for the client's FIN",
        started.elapsed()
    );
}

/// Completes an upgrade by hand and returns the raw socket.
fn raw_upgrade(server: &Server, path: &str) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    s
}

/// Reads frames until a close frame; returns its code.
fn read_close_code(s: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut off = 0;
        while let Ok(Some((h, hl))) = websocket_server::ws::Header::parse(&buf[off..]) {
            let end = off + hl + h.payload_len as usize;
            if end > buf.len() {
                break;
            }
            if u8::from(h.opcode) == 8 {
                return Some(u16::from_be_bytes([buf[off + hl], buf[off + hl + 1]]));
            }
            off = end;
        }
        buf.drain(..off);
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
