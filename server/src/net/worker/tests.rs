//! Unit tests of the worker's bookkeeping on a real loopback socket.

use super::*;
use crate::config::Config;
use crate::hub::inbox::inbox;
use crate::net::outq::Chunk;

/// A worker on a real loopback listener, with its inbox sender kept alive.
fn worker() -> (Worker, std::net::SocketAddr, crate::hub::inbox::InboxSender) {
    let config = Config::from_lookup(|k| (k == "WORKERS").then(|| "1".to_string())).unwrap();
    let poll = Poll::new().unwrap();
    let (tx, rx) = inbox(mio::Waker::new(poll.registry(), WAKER).unwrap());
    let (publish, _) = crossbeam_channel::bounded(1);
    let state = Arc::new(ServerState::new(config, vec![tx.clone()], publish, None, None));
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    (Worker::new(0, poll, (listener, None), rx, state).unwrap(), addr, tx)
}

/// Accepts the connection just made (the listener is non-blocking).
fn accept_one(w: &mut Worker) -> usize {
    let before = w.conns.len();
    for _ in 0..200 {
        w.accept_all(crate::http::routes::Listener::Public);
        if w.conns.len() > before {
            return w.conns.iter().map(|(k, _)| k).max().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no connection accepted");
}

#[test]
fn a_stale_slow_consumer_entry_never_closes_the_connection_that_reuses_its_key() {
    let (mut w, addr, _tx) = worker();
    let _first = std::net::TcpStream::connect(addr).unwrap();
    let key = accept_one(&mut w);
    // It goes over its bound outside a fan-out (a pong, a ping), then is
    // removed in the same iteration: its entry stays on the slow list.
    let c = w.conns.get_mut(key).unwrap();
    check_bound(c, key, 0, &mut w.slow);
    c.out.push(Chunk::Shared(Arc::from(&b"x"[..])));
    check_bound(c, key, 0, &mut w.slow);
    assert_eq!(w.slow.len(), 1);
    w.doom(key);
    w.before_sleep(Instant::now());
    w.remove_doomed();
    assert!(!w.conns.contains(key));
    // A fresh connection, still in its HTTP phase, gets the same key.
    let _second = std::net::TcpStream::connect(addr).unwrap();
    assert_eq!(accept_one(&mut w), key, "the slab reuses the freed key");
    w.close_slow_consumers();
    let c = w.conns.get(key).unwrap();
    assert!(!c.close_sent(), "the new connection was closed as a slow consumer");
    assert!(w.slow.is_empty());
    // Stale entries on the other lists are skipped as well.
    w.pending_read.push((key, c.id + 1000));
    w.doomed.push((key, c.id + 1000));
    w.read_pending();
    w.before_sleep(Instant::now());
    w.remove_doomed();
    assert!(w.conns.contains(key), "a stale doomed entry removed the new connection");
}

/// Reads from `client` until `buf` holds an HTTP head and one whole
/// WebSocket frame after it; returns the head's length and the frame's
/// first byte, its payload and the bytes read in all.
fn read_101_and_frame(client: &mut std::net::TcpStream) -> (Vec<u8>, u8, Vec<u8>, usize) {
    use std::io::Read;
    client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4) {
            if let Ok(Some((h, n))) = crate::ws::Header::parse(&buf[end..]) {
                let len = h.payload_len as usize;
                if buf.len() >= end + n + len {
                    return (buf[..end].to_vec(), buf[end], buf[end + n..end + n + len].to_vec(), buf.len());
                }
            }
        }
        let mut chunk = [0u8; 4096];
        let got = client.read(&mut chunk).expect("the 101 and the welcome arrive");
        assert!(got > 0, "closed before the welcome");
        buf.extend_from_slice(&chunk[..got]);
    }
}

#[test]
fn an_upgrade_writes_its_101_and_welcome_at_once_and_keeps_no_output_buffer() {
    use std::io::Write as _;
    for deflate in [false, true] {
        let (mut w, addr, _tx) = worker();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        let key = accept_one(&mut w);
        let offer =
            if deflate { "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" } else { "" };
        let request = format!(
            "GET /ws?room=lobby&name=ana HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
        );
        client.write_all(request.as_bytes()).unwrap();
        for _ in 0..400 {
            w.on_event(key, true, false);
            if w.conns[key].is_ws() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let c = w.conns.get_mut(key).unwrap();
        assert!(c.chat().is_some_and(|s| s.joined), "joined at once (no loader)");
        assert_eq!(c.has(flag::DEFLATE), deflate);
        // Before any flush pass: the 101 and the welcome are written, and
        // nothing made for them is left allocated on the connection (the
        // medium-lived buffers that fragmented the worker's heap, docs/
        // benchmarks.md: idle memory).
        assert!(c.out.is_empty(), "the opening replies wait in the queue (deflate {deflate})");
        assert!(!c.out.holds_allocation(), "the output queue keeps an allocation (deflate {deflate})");
        assert_eq!(c.allowance, 0);
        let m = w.metrics();
        assert_eq!(m.outbound_bytes.load(Relaxed), 0);
        assert_eq!(m.compressed_frames_out.load(Relaxed), u64::from(deflate));
        let (head, b0, payload, read) = read_101_and_frame(&mut client);
        assert_eq!(m.bytes_out.load(Relaxed) as usize, read, "all written, and counted");
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"), "{head}");
        assert_eq!(head.contains("Sec-WebSocket-Extensions: permessage-deflate"), deflate, "{head}");
        let json = if deflate {
            assert_eq!(b0, 0xc1, "FIN, RSV1, text: the welcome is compressed");
            crate::ws::Inflater::new().inflate(&payload, 1 << 16).unwrap().to_vec()
        } else {
            assert_eq!(b0, 0x81, "FIN, text");
            payload
        };
        let welcome = String::from_utf8(json).unwrap();
        assert!(welcome.starts_with(r#"{"type":"system""#) && welcome.contains(r#""room":"lobby""#), "{welcome}");
    }
}
