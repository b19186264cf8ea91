//! ADMIN_PORT: the operator endpoints on a port of their own.
//!
//! With ADMIN_PORT set, /health, /ready and /metrics answer there and
//! nothing else does; /metrics leaves the public port (404) while the
//! original's endpoints (/, /health, /stats) and the chat stay on it. The
//! admin port keeps answering through a drain: /ready 503, /health 200,
//! even after the public listener has closed. Unset, /metrics stays on
//! the public port.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn admin_port_serves_the_operator_endpoints_and_only_them() {
    let server = Server::start(&[("ADMIN_PORT", "0")]);
    let admin = server.admin_port();
    assert_ne!(admin, server.port);

    for path in ["/health", "/ready"] {
        let (status, _, body) = http_get(admin, path);
        assert_eq!(status, 200, "admin {path}: {body}");
    }
    let (status, head, body) = http_get(admin, "/metrics");
    assert_eq!(status, 200, "admin /metrics");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    assert!(body.contains("websocket_connections_active "), "admin /metrics has the gauges: {body}");
    for path in ["/", "/stats", "/history?room=a", "/ws?room=a", "/echo", "/nope"] {
        assert_eq!(http_get(admin, path).0, 404, "admin port must not serve {path}");
    }
    // No WebSocket on the admin port, whatever the path.
    let upgrade = "GET /ws?room=a HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    assert_eq!(http_raw(admin, upgrade).0, 404, "upgrade on the admin port");

    // The public port: /metrics is gone, the rest is as before.
    let (status, _, body) = http_get(server.port, "/metrics");
    assert_eq!(status, 404, "/metrics on the public port with ADMIN_PORT set: {body}");
    assert!(!body.contains("websocket_"), "no metrics leak on the public port");
    for path in ["/", "/health", "/ready", "/stats"] {
        assert_eq!(http_get(server.port, path).0, 200, "public {path}");
    }
    let (mut a, _) = join(&server, "room=adm&name=a");
    send_chat(&mut a, "hello");
    assert_eq!(recv_chats(&mut a, 1)[0].1, "hello");

    // The refusals are counted like any other answer.
    let (_, _, metrics) = http_get(admin, "/metrics");
    let not_found = metrics
        .lines()
        .find_map(|l| l.strip_prefix("websocket_http_responses_total{status=\"404\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(not_found >= 8.0, "404s counted: {not_found}");
}

#[test]
fn without_admin_port_metrics_stay_on_the_public_port() {
    let server = Server::start(&[]);
    let (status, _, body) = http_get(server.port, "/metrics");
    assert_eq!(status, 200);
    assert!(body.contains("websocket_connections_active "));
    eventually("the start-up line is recorded", || server.logged("listening on"));
    assert!(!server.logged("admin port"), "no admin listener when ADMIN_PORT is unset");
}

#[test]
fn admin_port_answers_probes_through_the_drain() {
    let mut server =
        Server::start(&[("ADMIN_PORT", "0"), ("DRAIN_DELAY_SECS", "1"), ("DRAIN_WINDOW_SECS", "4"), ("WORKERS", "1")]);
    let admin = server.admin_port();
    // A client keeps the worker busy for the whole window.
    let (_client, _) = join(&server, "room=drain");
    server.signal("TERM");
    let start = Instant::now();
    eventually("admin /ready turns 503", || http_get(admin, "/ready").0 == 503);
    assert_eq!(http_get(admin, "/health").0, 200, "alive while draining");
    // Past the delay the public listener is closed; the admin one is not.
    eventually("the public port stops accepting", || std::net::TcpStream::connect(("127.0.0.1", server.port)).is_err());
    assert!(start.elapsed() >= Duration::from_millis(900), "the public port closes after the delay");
    let (status, _, body) = http_get(admin, "/health");
    assert_eq!(status, 200, "admin /health after the public listener closed: {body}");
    let (status, _, body) = http_get(admin, "/ready");
    assert_eq!(status, 503, "admin /ready while closing: {body}");
    assert!(body.contains("draining"), "{body}");
    let (_, _, metrics) = http_get(admin, "/metrics");
    assert!(metrics.contains("websocket_draining 1"), "metrics while draining");
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0));
}
