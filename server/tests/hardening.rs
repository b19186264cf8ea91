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
