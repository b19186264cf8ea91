//! Every HTTP answer of the contract, against the real binary.

mod common;

use common::*;

const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n{KEY}\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Sends an upgrade request and reads only the response head.
fn upgrade_status(port: u16, path: &str, extra: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(upgrade_request(path, extra).as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
    let (status, head, _) = parse_response(&String::from_utf8_lossy(&buf));
    (status, head)
}

#[test]
fn health_ready_stats_metrics() {
    let server = Server::start(&[("POD_NAME", "pod-h")]);
    let (status, head, body) = http_get(server.port, "/health");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: application/json"));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["pod"].as_str(), v["connections"].as_u64()),
        (Some("healthy"), Some("pod-h"), Some(0))
    );
    assert!(v["uptime"].as_f64().is_some());

    let (status, _, body) = http_get(server.port, "/ready");
    assert_eq!(status, 200, "{body}");

    let (_ws, _) = join(&server, "room=s");
    let (status, _, body) = http_get(server.port, "/stats");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["active_connections"], 1);
    assert_eq!(v["total_connections"], 1);
    assert_eq!(v["pod_name"], "pod-h");
    assert!(v["memory"]["rss"].as_u64().unwrap() > 0);
    assert!(v["cpu"]["user"].as_u64().is_some());

    let (status, head, body) = http_get(server.port, "/metrics");
    assert_eq!(status, 200);
    assert!(head.contains("text/plain; version=0.0.4"));
    eventually("everything written: the outbound gauge is back to 0", || {
        server.metric("websocket_outbound_queued_bytes") == 0.0
    });
    for name in [
        "websocket_connections_active 1",
        "websocket_upgrades_total 1",
        "websocket_frames_received_total",
        "websocket_bytes_sent_total",
        "websocket_messages_received_total",
        "websocket_messages_delivered_total",
        "websocket_protocol_errors_total{kind=\"protocol\"}",
        "websocket_closes_total{reason=\"slow_consumer\"}",
        "websocket_closes_total{reason=\"rate_limit\"}",
        "websocket_outbound_queued_bytes",
        "websocket_inbox_depth",
        "websocket_draining 0",
    ] {
        assert!(body.contains(name), "metrics lack {name}");
    }
}

#[test]
fn the_chat_page_is_served_with_a_strict_csp() {
    let server = Server::start(&[]);
    let (status, head, body) = http_get(server.port, "/");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: text/html"));
    assert!(head.contains("Content-Security-Policy: default-src 'none'"));
    assert!(body.contains("<html"));
}

#[test]
fn error_statuses() {
    let server = Server::start(&[("ALLOWED_ORIGINS", "https://chat.example")]);
    let port = server.port;
    // Malformed request, unknown path, wrong method.
    assert_eq!(http_raw(port, "GARBAGE\x01\r\n\r\n").0, 400);
    assert_eq!(http_raw(port, "GET / HTTP/1.1\r\nBad Header\r\n\r\n").0, 400);
    assert_eq!(http_get(port, "/nope").0, 404);
    assert_eq!(http_get(port, "/echo").0, 404, "echo only with ECHO_ROUTE=1");
    assert_eq!(http_raw(port, "DELETE /health HTTP/1.1\r\nHost: x\r\n\r\n").0, 405);
    assert_eq!(
        http_raw(port, "DELETE /nope HTTP/1.1\r\nHost: x\r\n\r\n").0,
        404,
        "unknown path: 404 whatever the method"
    );
    assert_eq!(http_raw(port, "POST /zzz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n").0, 404);
    // A head over MAX_REQUEST_BYTES.
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(http_raw(port, &big).0, 431);
    // Version problems → 426 with the version we speak.
    let (status, head, _) = http_get(port, "/ws");
    assert_eq!(status, 426);
    assert!(head.contains("Sec-WebSocket-Version: 13"));
    let wrong = "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n";
    let (status, head, _) = http_raw(port, wrong);
    assert_eq!(status, 426);
    assert!(head.contains("Sec-WebSocket-Version: 13"));
    // Invalid query parameters → 400.
    for q in ["room=", "room=a%2Fb", "name=", "since=-1", "since=x", "room=%zz"] {
        assert_eq!(upgrade_status(port, &format!("/ws?{q}"), "").0, 400, "{q}");
    }
    // Origins.
    assert_eq!(upgrade_status(port, "/ws", "Origin: https://evil.example\r\n").0, 403);
    assert_eq!(upgrade_status(port, "/ws", "Origin: https://chat.example\r\n").0, 101);
    assert_eq!(server.metric("websocket_http_responses_total{status=\"403\"}"), 1.0);
}

#[test]
fn at_capacity_upgrades_get_503_and_ready_turns_503_but_health_stays_200() {
    let server = Server::start(&[("MAX_CONNECTIONS", "2")]);
    let (_a, _) = join(&server, "room=c");
    let (_b, _) = join(&server, "room=c");
    let (status, head) = upgrade_status(server.port, "/ws?room=c", "");
    assert_eq!(status, 503);
    assert!(head.contains("Retry-After: "), "{head}");
    assert_eq!(http_get(server.port, "/ready").0, 503);
    assert_eq!(http_get(server.port, "/health").0, 200, "liveness never depends on load");
    drop(_a);
    eventually("a slot frees up", || http_get(server.port, "/ready").0 == 200);
    assert_eq!(upgrade_status(server.port, "/ws?room=c", "").0, 101);
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    use std::io::{Read, Write};
    let server = Server::start(&[]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    // Two pipelined requests, then a third that asks to close.
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\nHEAD /ready HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.write_all(b"GET /ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut all = String::new();
    s.read_to_string(&mut all).unwrap();
    assert_eq!(all.matches("HTTP/1.1 200 OK").count(), 3, "{all}");
    assert_eq!(all.matches("Connection: keep-alive").count(), 2);
    assert!(all.ends_with("}\n") || all.ends_with('}'), "the last response has a body, the HEAD one had none");
}

#[test]
fn a_slow_request_is_cut_off_at_the_handshake_deadline() {
    use std::io::{Read, Write};
    let server = Server::start(&[("HANDSHAKE_TIMEOUT_SECS", "1")]);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap(); // never finished
    let start = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without a response");
    assert!(start.elapsed() < std::time::Duration::from_secs(4), "{:?}", start.elapsed());
    eventually("handshake timeout counted", || {
        server.metric("websocket_closes_total{reason=\"handshake_timeout\"}") == 1.0
    });
}

#[test]
fn echo_route_when_enabled() {
    let server = Server::start(&[("ECHO_ROUTE", "1")]);
    let mut ws = connect(&server, "/echo");
    ws.send(tungstenite::Message::text("raw text, no JSON")).unwrap();
    assert_eq!(read_frame(&mut ws).unwrap(), tungstenite::Message::text("raw text, no JSON"));
    ws.send(tungstenite::Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    assert_eq!(read_frame(&mut ws).unwrap(), tungstenite::Message::binary(vec![0u8, 1, 2, 255]));
}

#[test]
fn a_response_larger_than_the_outbound_bound_is_sent_whole_and_ends_the_connection() {
    // The bound is for broadcasts pushed at a client that does not read; a
    // response is the client's own reply and is never cut off as a "slow
    // consumer". Past the bound it is the connection's last.
    let server = Server::start(&[("MAX_OUTBOUND_BYTES", "65536"), ("RATE_LIMIT", "1000"), ("RATE_BURST", "1000")]);
    let (mut ws, _) = join(&server, "room=big");
    let text = "x".repeat(4000);
    for _ in 0..100 {
        send_chat(&mut ws, &text); // and read the echo, or it is the slow consumer
        assert_eq!(recv_chats(&mut ws, 1).len(), 1);
    }
    // Two pipelined keep-alive requests: the large answer comes whole, says
    // `Connection: close`, and the second request is not read.
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    let (status, head, body) = http_raw(server.port, &(get("/history?room=big&limit=1000") + &get("/health")));
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("Connection: close"), "{head}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("the whole body, and nothing after it");
    assert_eq!(list.as_array().unwrap().len(), 100);
    assert_eq!(server.metric("websocket_closes_total{reason=\"slow_consumer\"}"), 0.0);
    // Small answers keep the connection alive as before: both are answered.
    let last = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    let (status, head, body) = http_raw(server.port, &(get("/history?room=big&limit=1") + last));
    assert_eq!(status, 200);
    assert!(head.contains("Connection: keep-alive"), "{head}");
    assert!(body.contains(r#""status":"healthy""#), "the second response follows: {body}");
}
