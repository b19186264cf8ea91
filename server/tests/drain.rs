//! Graceful shutdown: SIGTERM turns /ready to 503 at once, closes every
//! client with 1001 after the delay, spread over the window, reads what
//! clients still send, and exits 0 in time. A second signal exits at once.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tungstenite::Message;

#[test]
fn sigterm_drains_every_client_with_1001_and_exits_zero_in_time() {
    let mut server = Server::start(&[("DRAIN_DELAY_SECS", "1"), ("DRAIN_WINDOW_SECS", "2"), ("WORKERS", "2")]);
    let mut clients: Vec<Ws> = (0..30).map(|i| join(&server, &format!("room=d{}", i % 3)).0).collect();
    let port = server.port;
    let start = Instant::now();
    server.signal("TERM");
    eventually("/ready turns 503 at once", || http_get(port, "/ready").0 == 503);
    assert!(start.elapsed() < Duration::from_millis(900), "before the drain delay");
    assert_eq!(http_get(port, "/health").0, 200, "alive while draining");

    let mut close_times = Vec::new();
    for ws in clients.iter_mut() {
        let mut notice = false;
        let code = loop {
            match read_frame(ws) {
                Ok(Message::Text(t)) => {
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    if v["message"] == "Server is shutting down. Please reconnect." {
                        notice = true;
                    }
                }
                Ok(Message::Close(f)) => break f.map(|f| u16::from(f.code)),
                Ok(_) => {}
                Err(e) => panic!("no close frame: {e}"),
            }
        };
        assert!(notice, "the drain notice comes before the close");
        assert_eq!(code, Some(1001));
        close_times.push(start.elapsed());
    }
    close_times.sort();
    let first = close_times[0];
    let last = *close_times.last().unwrap();
    assert!(first >= Duration::from_millis(900), "closes wait for the drain delay: {first:?}");
    assert!(last - first >= Duration::from_millis(800), "closes are spread over the window: {first:?}..{last:?}");
    drop(clients);
    let status = server.wait_exit(Duration::from_secs(15));
    assert_eq!(status, Some(0), "log: {:?}", server.log.lock().unwrap());
    assert!(start.elapsed() < Duration::from_secs(10));
    assert!(server.logged("drained: 30 clients closed"));
}

#[test]
fn messages_in_flight_during_the_drain_are_not_lost() {
    // One worker, so the writer (first in) is closed first and the observer
    // (second) a second later, and still sees what the writer sent late. The
    // rate limit is out of the way: on a slow machine the writer gets more
    // than the default burst out before its close, and a message refused
    // after the server's close frame can only be counted, not answered.
    let mut server = Server::start(&[
        ("DRAIN_DELAY_SECS", "0"),
        ("DRAIN_WINDOW_SECS", "2"),
        ("WORKERS", "1"),
        ("RATE_LIMIT", "1000"),
        ("RATE_BURST", "1000"),
    ]);
    let (mut writer, _) = join(&server, "room=f");
    let (mut observer, _) = join(&server, "room=f");
    server.signal("TERM");
    // Bursts of 5 without waiting: when the close arrives, some of the last
    // burst were still in flight, sent after the server's close frame.
    let mut sent = 0;
    let start = Instant::now();
    'outer: loop {
        for _ in 0..5 {
            if writer.send(Message::text(format!(r#"{{"type":"chat","message":"late {sent}"}}"#))).is_err() {
                break 'outer;
            }
            sent += 1;
        }
        let mut echoed = 0;
        while echoed < 5 {
            match writer.read() {
                Ok(Message::Text(t)) if t.contains("\"chat\"") => echoed += 1,
                Ok(Message::Close(_)) | Err(_) => break 'outer,
                Ok(_) => {}
            }
        }
        assert!(start.elapsed() < Duration::from_secs(5), "no close");
    }
    let mut seen = Vec::new();
    loop {
        match observer.read() {
            Ok(Message::Text(t)) => {
                let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "chat" {
                    seen.push(v["message"].as_str().unwrap().to_string());
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let expected: Vec<String> = (0..sent).map(|i| format!("late {i}")).collect();
    assert_eq!(seen, expected, "every message the writer sent, the late ones included");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn a_second_signal_exits_at_once() {
    let mut server = Server::start(&[("DRAIN_DELAY_SECS", "20")]);
    let (_ws, _) = join(&server, "room=x");
    server.signal("TERM");
    eventually("draining", || http_get(server.port, "/ready").0 == 503);
    let start = Instant::now();
    server.signal("INT");
    assert_eq!(server.wait_exit(Duration::from_secs(5)), Some(1));
    assert!(start.elapsed() < Duration::from_secs(2));
    // The log is read by a thread of its own, which may still be behind the exit.
    eventually("the second signal is logged", || server.logged("second signal"));
}
