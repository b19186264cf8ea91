//! Regression tests for the server defects of issue 12, against the real
//! binary (and a real nx-27017 where MongoDB is involved): each one failed
//! before its fix.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// A `since` near `u64::MAX` is a seq beyond the room's last: answered
/// `recovered: false`, with no overflow anywhere (a debug build used to
/// panic the history loader, which then never answered another join).
#[test]
fn a_since_near_u64_max_is_not_recovered_and_breaks_nothing() {
    let mongo = MongoWire::start();
    let uri = mongo.uri();
    let server = Server::start(&[("MONGO_URI", &uri), ("RATE_LIMIT", "1000"), ("RATE_BURST", "1000")]);
    let (mut ws, _) = join(&server, "room=edge&name=a");
    for i in 0..3 {
        send_chat(&mut ws, &format!("m{i}"));
    }
    recv_chats(&mut ws, 3);
    for since in [u64::MAX, u64::MAX - 1, i64::MAX as u64 + 1] {
        // A cold room (needs the loader) and a warm one (answered at once).
        for room in [format!("cold{since}"), "edge".to_string()] {
            let started = Instant::now();
            let (_c, w) = join(&server, &format!("room={room}&since={since}"));
            assert_eq!(w["recovered"], false, "since={since} in {room}: {w}");
            assert!(w["history"].as_array().unwrap().is_empty(), "{w}");
            assert!(started.elapsed() < Duration::from_secs(5), "answered after the catch-up wait at most");
        }
    }
    // The loader is alive: a deep resume into a cold room is still answered from MongoDB.
    let (_c, w) = join(&server, "room=edge&since=0");
    assert_eq!(w["recovered"], true, "{w}");
    assert_eq!(w["history"].as_array().unwrap().len(), 3, "{w}");
    assert!(!server.logged("panic in thread"), "a thread panicked: {:?}", server.log.lock().unwrap());
}

/// A deep resume (from below the ring) while the room is busy comes back
/// complete when every message is in MongoDB; and so does a deep
/// `/history`. With a ring of 10 and a steady sender, what slid out of the
/// ring while the loader read MongoDB (or was not written yet) used to be
/// in neither part of the answer: `recovered: false` with a hole just
/// below the ring.
#[test]
fn a_deep_resume_in_a_busy_room_is_complete() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;

    let mongo = MongoWire::start();
    let uri = mongo.uri();
    let server = Server::start(&[
        ("MONGO_URI", &uri),
        ("HISTORY_RING", "10"),
        ("HISTORY_ON_JOIN", "10"),
        ("RATE_LIMIT", "10000"),
        ("RATE_BURST", "10000"),
    ]);
    let (mut sender, _) = join(&server, "room=busy&name=s");
    // A reader keeps the sender's own deliveries flowing.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = sender.get_ref() {
        s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    }
    let steady = {
        let (stop, sent) = (stop.clone(), sent.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut i = 0u64;
            // ~200 msg/s, bounded in count and time.
            while !stop.load(Ordering::Relaxed) && i < 20_000 && started.elapsed() < Duration::from_secs(60) {
                send_chat(&mut sender, &format!("m{i}"));
                i += 1;
                sent.store(i, Ordering::Relaxed);
                // Read what arrived so far (the read timeout is 1 ms).
                while sender.read().is_ok() {}
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    eventually("300 messages sent", || sent.load(Ordering::Relaxed) >= 300);
    let mut incomplete = Vec::new();
    for attempt in 0..12 {
        let (_c, w) = join(&server, "room=busy&since=5");
        let seqs: Vec<u64> = w["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
        let last = w["lastSeq"].as_u64().unwrap_or_else(|| panic!("lastSeq in {w}"));
        let expected: Vec<u64> = (6..=last).collect();
        if w["recovered"] != true || seqs != expected {
            let missing: Vec<u64> = expected.iter().copied().filter(|s| !seqs.contains(s)).collect();
            incomplete.push(format!("resume {attempt}: recovered={} last={last} missing={missing:?}", w["recovered"]));
        }
        let (status, _, body) = http_get(server.port, "/history?room=busy&limit=200");
        assert_eq!(status, 200);
        let hist: Vec<u64> = serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect();
        let contiguous = hist.len() == 200 && hist.windows(2).all(|p| p[0] == p[1] + 1);
        if !contiguous {
            incomplete.push(format!("/history {attempt}: {} entries, newest first, with a hole: {hist:?}", hist.len()));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    steady.join().unwrap();
    assert!(incomplete.is_empty(), "busy-room deep reads came back incomplete:\n{}", incomplete.join("\n"));
}

/// A worker that panics outside the per-connection `catch_unwind` is seen:
/// logged, counted, `/health` fails, the other workers drain (their
/// clients get 1001) and the process exits 1. It used to go unnoticed: the
/// process kept running with a dead worker and `/health` answered 200.
#[test]
fn a_dead_worker_is_seen_and_the_process_drains_and_exits_non_zero() {
    let mut server = Server::start(&[
        ("WORKERS", "2"),
        ("WS_TEST_FAULT", "worker-panic"),
        ("DRAIN_DELAY_SECS", "3"),
        ("DRAIN_WINDOW_SECS", "1"),
    ]);
    // Clients spread over both workers by SO_REUSEPORT.
    let mut clients: Vec<Ws> = (0..12).map(|i| join(&server, &format!("room=r&name=c{i}")).0).collect();
    eventually("the worker's death logged", || server.logged("worker 0 died of a panic"));
    let (status, _, body) = http_get(server.port, "/health");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("worker 0 died"), "{body}");
    assert_eq!(server.metric("websocket_worker_deaths_total"), 1.0);
    // The survivors' clients are drained with 1001; the dead worker's are gone.
    let mut drained = 0;
    for ws in &mut clients {
        let start = Instant::now();
        let code = loop {
            match read_frame(ws) {
                Ok(tungstenite::Message::Close(f)) => break f.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => break None,
            }
        };
        assert!(start.elapsed() < WAIT);
        if code == Some(1001) {
            drained += 1;
        }
    }
    assert!(drained >= 1, "no client of the surviving worker was drained with 1001");
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(1), "exit status after a worker's death");
    assert!(server.logged("draining the 1 others"), "{:?}", server.log.lock().unwrap());
}

/// `websocket-server --help | head -1`: a reader that goes away is not a
/// crash. The help used to panic on the broken pipe and exit 101.
#[test]
fn help_into_a_closed_pipe_exits_zero_quietly() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    for arg in ["--help", "--list-env", "--help"] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_websocket-server"))
            .arg(arg)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The read end closes before the process writes: its writes fail with EPIPE.
        drop(child.stdout.take());
        let status = child.wait().unwrap();
        let mut err = String::new();
        child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        assert_eq!(status.code(), Some(0), "{arg}: {err}");
        assert!(err.is_empty(), "{arg} wrote to stderr: {err}");
    }
    // And read in full, the help is still there.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_websocket-server")).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("HISTORY_RING"));
}

/// A message MongoDB can never store (a document over its 16 MiB limit,
/// which the driver refuses for the whole batch before sending it) is
/// dropped, logged with its room and seq and counted, and the messages
/// after it are stored. It used to be retried forever, with every later
/// message of the pod waiting behind it until the queue overflowed.
#[test]
fn a_document_mongodb_refuses_for_good_does_not_block_the_rest() {
    let mongo = MongoWire::start();
    let uri = mongo.uri();
    let server = Server::start(&[
        ("MONGO_URI", &uri),
        ("MAX_MESSAGE_BYTES", "17500000"),
        ("MAX_CHAT_BYTES", "17400000"),
        ("MAX_OUTBOUND_BYTES", "220000000"),
        ("HISTORY_MAX_BYTES", "100000000"),
    ]);
    // A client that can read the 17 MB broadcast (tungstenite's default stops at 16 MiB).
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let (mut ws, _) =
        tungstenite::client::connect_with_config(server.url("/ws?room=poison&name=p"), Some(config), 3).unwrap();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    assert_eq!(recv_json(&mut ws)["type"], "system");
    send_chat(&mut ws, &"x".repeat(17_000_000));
    assert_eq!(recv_chats(&mut ws, 1)[0].0, 1);
    for i in 0..3 {
        send_chat(&mut ws, &format!("after {i}"));
    }
    recv_chats(&mut ws, 3);
    let start = Instant::now();
    loop {
        let stored = mongo.stored();
        if stored == vec![("poison".to_string(), 2), ("poison".to_string(), 3), ("poison".to_string(), 4)] {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "messages after the poison one not stored: {stored:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.metric("websocket_mongo_rejected_total"), 1.0);
    assert!(server.logged("refused message 1 of room poison for good"), "{:?}", server.log.lock().unwrap());
}
