//! Unit tests of the worker's bookkeeping on a real loopback socket.

use super::*;
use crate::config::Config;
use crate::hub::inbox::inbox;

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
