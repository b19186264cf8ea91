//! Replica mode against real servers: three websocket-server processes on
//! one redis-server and one MongoDB wire-protocol server (nx-27017), all on
//! free loopback ports. Clients spread over the replicas see every message
//! of their room exactly once, in seq order; every message is stored once;
//! and that stays true through a Redis restart, a MongoDB outage and the
//! SIGTERM of one replica.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use common::tracker::{Report, Tracker};
use common::*;

/// A replica on `redis` (and `mongo`), with a generous rate limit.
fn replica(pod: &str, redis: &Redis, mongo: Option<&MongoWire>, extra: &[(&str, &str)]) -> Server {
    let redis_url = redis.url();
    let mongo_uri = mongo.map(|m| m.uri());
    let mut env: Vec<(&str, &str)> = vec![
        ("REDIS_URL", &redis_url),
        ("POD_NAME", pod),
        ("RATE_LIMIT", "1000"),
        ("RATE_BURST", "1000"),
        ("WORKERS", "2"),
    ];
    if let Some(uri) = &mongo_uri {
        env.push(("MONGO_URI", uri));
    }
    env.extend_from_slice(extra);
    Server::start(&env)
}

/// Waits (up to `limit`) until MongoDB holds exactly `expected` for `room`.
fn await_stored(mongo: &MongoWire, room: &str, expected: &BTreeSet<u64>, limit: Duration) {
    let start = Instant::now();
    let mut last = Vec::new();
    while start.elapsed() < limit {
        let stored: Vec<u64> = mongo.stored().into_iter().filter(|(r, _)| r == room).map(|(_, s)| s).collect();
        let unique: BTreeSet<u64> = stored.iter().copied().collect();
        assert_eq!(unique.len(), stored.len(), "room {room}: a message stored twice: {stored:?}");
        if &unique == expected {
            return;
        }
        last = stored;
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("room {room}: MongoDB holds {} messages, expected {}: {last:?}", last.len(), expected.len());
}

/// Zero loss over a run: every report gapless; every text written to a
/// socket was delivered or answered with an error frame; no text twice.
fn assert_no_loss(room: &str, reports: &[Report]) -> BTreeSet<u64> {
    let mut seen: HashMap<u64, String> = HashMap::new();
    for (i, r) in reports.iter().enumerate() {
        r.assert_gapless(&format!("{room} client {i}"));
        for (seq, text) in r.seqs.iter().zip(&r.texts) {
            let prev = seen.insert(*seq, text.clone());
            assert!(prev.is_none() || prev.as_ref() == Some(text), "{room}: seq {seq} carried two different messages");
        }
    }
    let delivered: BTreeSet<&String> = seen.values().collect();
    assert_eq!(delivered.len(), seen.len(), "{room}: a message was sequenced twice");
    let sent: Vec<&String> = reports.iter().flat_map(|r| &r.sent).collect();
    let refused: usize = reports.iter().map(|r| r.refused.len()).sum();
    let lost: Vec<&&String> = sent.iter().filter(|t| !delivered.contains(**t)).collect();
    assert!(
        lost.len() <= refused,
        "{room}: {} messages lost ({refused} refused with an error frame): {lost:?}",
        lost.len()
    );
    seen.keys().copied().collect()
}

#[test]
fn three_replicas_act_as_one_chat() {
    let redis = Redis::start();
    let mongo = MongoWire::start();
    let servers: Vec<Server> = (0..3).map(|i| replica(&format!("pod-{i}"), &redis, Some(&mongo), &[])).collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let rooms = ["alpha", "beta"];
    let mut clients: Vec<(usize, Tracker)> = Vec::new();
    for (r, room) in rooms.iter().enumerate() {
        for i in 0..9 {
            clients.push((r, Tracker::start(ports.clone(), i % 3, room, &format!("c{i}"))));
        }
    }
    for round in 0..5 {
        for (i, (r, c)) in clients.iter().enumerate() {
            c.send(&format!("{}:{i}:{round}", rooms[*r]));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eventually("every client saw its room's 45 messages", || clients.iter().all(|(_, c)| c.last_seq() >= 45));
    let reports: Vec<(usize, Report)> = clients.into_iter().map(|(r, c)| (r, c.finish())).collect();
    for (r, room) in rooms.iter().enumerate() {
        let mine: Vec<Report> = reports.iter().filter(|(x, _)| *x == r).map(|(_, rep)| rep.clone()).collect();
        for rep in &mine {
            assert_eq!(rep.seqs, (1..=45).collect::<Vec<u64>>(), "{room}: one order, exactly once");
            assert_eq!(rep.texts, mine[0].texts, "{room}: every replica delivers the same order");
            assert!(rep.texts.iter().all(|t| t.starts_with(room)), "{room}: rooms are isolated");
            assert!(rep.refused.is_empty());
        }
        assert_eq!(assert_no_loss(room, &mine).len(), 45);
        await_stored(&mongo, room, &(1..=45).collect(), Duration::from_secs(20));
    }
    // Every replica published and received through Redis.
    for s in &servers {
        assert_eq!(s.metric("websocket_redis_connected"), 1.0);
        assert!(s.metric("websocket_redis_published_total") >= 30.0);
        assert_eq!(s.metric("websocket_redis_received_total"), 90.0);
        assert_eq!(s.metric("websocket_mongo_dropped_total"), 0.0);
    }
}

#[test]
fn history_and_resume_across_replicas_including_a_cold_one_and_mongodb() {
    let redis = Redis::start();
    let mongo = MongoWire::start();
    let small_ring = [("HISTORY_RING", "10"), ("HISTORY_ON_JOIN", "5")];
    let a = replica("pod-a", &redis, Some(&mongo), &small_ring);
    let b = replica("pod-b", &redis, Some(&mongo), &small_ring);
    let (mut sender, _) = join(&a, "room=h");
    for i in 1..=30 {
        send_chat(&mut sender, &format!("m{i}"));
    }
    assert_eq!(recv_chats(&mut sender, 30).last().unwrap().0, 30);
    await_stored(&mongo, "h", &(1..=30).collect(), Duration::from_secs(20));

    // Resume on the other replica, within its ring.
    let (_ws, w) = join(&b, "room=h&since=25");
    let seqs: Vec<u64> = w["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!((seqs, &w["recovered"]), ((26..=30).collect::<Vec<_>>(), &serde_json::json!(true)));

    // A replica that started after the messages: its history comes from Redis.
    let c = replica("pod-c", &redis, Some(&mongo), &small_ring);
    let (_ws, w) = join(&c, "room=h");
    let seqs: Vec<u64> = w["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!((seqs, w["lastSeq"].as_u64()), ((26..=30).collect::<Vec<_>>(), Some(30)));
    assert_eq!(w["history"][0]["podName"], "pod-a", "the origin pod is kept");

    // A resume from before the ring (and the Redis list): MongoDB fills it.
    let (mut deep, w) = join(&c, "room=h&since=5");
    let seqs: Vec<u64> = w["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!((seqs, &w["recovered"]), ((6..=30).collect::<Vec<_>>(), &serde_json::json!(true)));

    // And live traffic continues after it without a gap, from any replica.
    let (mut other, _) = join(&b, "room=h");
    send_chat(&mut other, "live");
    assert_eq!(recv_chats(&mut deep, 1), vec![(31, "live".to_string())]);

    // /history is served by any replica.
    let (_, _, body) = http_get(c.port, "/history?room=h&limit=2");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!((list[0]["seq"].as_u64(), list[1]["seq"].as_u64()), (Some(31), Some(30)));

    // ... also one that never saw the room (loaded first), and deeper than
    // the ring of 10 (from MongoDB): the room's last 25, newest first.
    let d = replica("pod-d", &redis, Some(&mongo), &small_ring);
    let history_seqs = || {
        let (status, _, body) = http_get(d.port, "/history?room=h&limit=25");
        assert_eq!(status, 200, "{body}");
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        list.as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect::<Vec<u64>>()
    };
    let expected: Vec<u64> = (7..=31).rev().collect();
    assert_eq!(history_seqs(), expected, "a cold replica's /history");
    assert_eq!(history_seqs(), expected, "and once warm, deeper than its ring");
}

#[test]
fn a_redis_restart_mid_traffic_loses_nothing_and_the_sequence_continues() {
    let mut redis = Redis::start();
    let mongo = MongoWire::start();
    let servers: Vec<Server> = (0..3).map(|i| replica(&format!("pod-{i}"), &redis, Some(&mongo), &[])).collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let clients: Vec<Tracker> = (0..6).map(|i| Tracker::start(ports.clone(), i % 3, "r", &format!("c{i}"))).collect();
    let start = Instant::now();
    let mut restarted = false;
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(6) {
        for (i, c) in clients.iter().enumerate() {
            c.send(&format!("t{n}-{i}"));
        }
        n += 1;
        if !restarted && start.elapsed() > Duration::from_secs(2) {
            redis.restart();
            restarted = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_secs(2));
    let reports: Vec<Report> = clients.into_iter().map(Tracker::finish).collect();
    let seqs = assert_no_loss("r", &reports);
    let max = *seqs.iter().max().unwrap();
    assert!(
        max as usize >= reports.iter().map(|r| r.sent.len()).sum::<usize>() / 2,
        "traffic went on after the restart"
    );
    // The sequence never went backwards: the stored seqs are exactly the delivered ones.
    await_stored(&mongo, "r", &seqs, Duration::from_secs(20));
    for s in &servers {
        eventually("Redis connections restored", || s.metric("websocket_redis_connected") == 1.0);
        assert!(s.metric("websocket_redis_reconnects_total") >= 1.0);
    }
}

/// A seq given twice — what the known race of docs/architecture.md ("When
/// Redis fails") does after Redis lost acknowledged writes: MongoDB already
/// holds `(room, 1)` as another message when the pod stores its message 1.
/// That message is not stored, and this is logged and counted, not counted
/// as written (a resend of the same message stays "already written").
#[test]
fn a_seq_mongodb_holds_as_another_message_is_logged_and_counted() {
    let redis = Redis::start();
    let mongo = MongoWire::start();
    let s = replica("pod-0", &redis, Some(&mongo), &[]);
    let client = Tracker::start(vec![s.port], 0, "cx", "c");
    // The pod knows the room (empty) and will number from 1; the other
    // message takes seq 1 in MongoDB behind its back.
    let db = mongodb::sync::Client::with_uri_str(mongo.uri()).unwrap();
    db.database("chat")
        .collection::<mongodb::bson::Document>("messages")
        .insert_one(mongodb::bson::doc! {
            "room": "cx", "seq": 1_i64, "id": "someone-else", "username": "u", "message": "first",
            "podName": "elsewhere", "timestamp": mongodb::bson::DateTime::now(),
        })
        .run()
        .unwrap();
    client.send("second");
    eventually("the conflict counted", || s.metric("websocket_mongo_seq_conflicts_total") == 1.0);
    assert!(s.logged("MongoDB holds seq 1 of room cx as message someone-else"), "{:#?}", s.log.lock().unwrap());
    assert_eq!(s.metric("websocket_mongo_written_total"), 0.0, "not counted as written");
    assert_eq!(s.metric("websocket_mongo_queue_depth"), 0.0);
    // The stored message 1 is the other one; the pod's own is not there twice.
    assert_eq!(mongo.stored().into_iter().filter(|(r, _)| r == "cx").count(), 1);
    let rep = client.finish();
    assert_eq!(rep.texts, vec!["second".to_string()], "delivered (it is the stored copy that conflicts)");
}

/// Redis loses its last two writes of a room (its counter and list set
/// back, as after a failover to a replica without them): when the pods
/// holding the room subscribe again, each finds the counter below the seq
/// it saw given and raises it, so a pod that numbers the room next — here
/// a third one, cold, whose only source is Redis — goes on after them
/// instead of giving seqs 11 and 12 again.
#[test]
fn a_counter_redis_set_back_is_raised_to_what_the_pods_saw_given() {
    let redis = Redis::start();
    let a = replica("pod-a", &redis, None, &[]);
    let b = replica("pod-b", &redis, None, &[]);
    let (mut on_a, _) = join(&a, "room=lost");
    let (mut on_b, _) = join(&b, "room=lost");
    for i in 1..=12 {
        send_chat(&mut on_a, &format!("m{i}"));
    }
    assert_eq!(recv_chats(&mut on_b, 12).last().map(|c| c.0), Some(12));
    assert_eq!(recv_chats(&mut on_a, 12).last().map(|c| c.0), Some(12));
    let mut con = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("SET").arg("chat:{lost}:seq").arg(10).query(&mut con).unwrap();
    let _: () = redis::cmd("LTRIM").arg("chat:{lost}:history").arg(0).arg(-3).query(&mut con).unwrap();
    // Both pods' subscriptions drop: they subscribe again and catch up.
    let _: i64 = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query(&mut con).unwrap();
    eventually("a pod raised the counter", || {
        a.metric("websocket_redis_seq_raised_total") + b.metric("websocket_redis_seq_raised_total") >= 1.0
    });
    let counter: u64 = redis::cmd("GET").arg("chat:{lost}:seq").query(&mut con).unwrap();
    assert_eq!(counter, 12, "raised to the highest seq given");
    let line = "room lost: Redis's counter was 10, below seq 12 given before; raised to 12";
    assert!(a.logged(line) || b.logged(line), "the raise is logged");
    let c = replica("pod-c", &redis, None, &[]);
    let (mut on_c, welcome) = join(&c, "room=lost");
    let history: Vec<u64> = welcome["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(history.last(), Some(&10), "pod-c's only source is the list Redis set back: {welcome}");
    send_chat(&mut on_c, "after");
    // (pod-c itself cannot fill 11 and 12 from anywhere: without MongoDB
    // its client is closed with 1012 to resume, as for any unfillable gap.)
    for ws in [&mut on_a, &mut on_b] {
        assert_eq!(recv_chats(ws, 1), vec![(13, "after".to_string())], "numbered after the seqs given before");
    }
}

/// The publisher's half of the restart race (docs/architecture.md, "When
/// Redis fails"), made to happen on purpose with a proxy in front of each
/// pod: pod-a's publisher gets Redis's answer for X (seq 5) but no
/// subscription receives it (Redis "died" between its reply and its writes
/// to the subscribers), Redis loses its data, and pod-b subscribes again
/// and numbers the room before pod-a is back, giving Y seq 5. Pod-a stores
/// X only once it comes back, so it publishes X again instead: both
/// clients see X (as seq 6) and Y, MongoDB holds each once, and no seq is
/// given twice. (Before, X was never delivered and MongoDB held X under the
/// seq the clients saw Y at.)
#[test]
fn a_message_answered_but_never_delivered_before_redis_lost_it_is_not_lost() {
    let redis = Redis::start();
    let mongo = MongoWire::start();
    let (pa, pb) = (proxy::RedisProxy::start(redis.port), proxy::RedisProxy::start(redis.port));
    let (ua, ub) = (pa.url(), pb.url());
    let a = replica("pod-a", &redis, Some(&mongo), &[("REDIS_URL", &ua)]);
    let b = replica("pod-b", &redis, Some(&mongo), &[("REDIS_URL", &ub)]);
    let ca = Tracker::start(vec![a.port], 0, "race", "ca");
    let cb = Tracker::start(vec![b.port], 0, "race", "cb");
    for i in 1..=2 {
        ca.send(&format!("a{i}"));
        cb.send(&format!("b{i}"));
    }
    eventually("the first four delivered", || ca.last_seq() == 4 && cb.last_seq() == 4);
    // Redis answers X to pod-a's publisher; no subscription receives it.
    pa.mute_subscriptions(true);
    pb.mute_subscriptions(true);
    let published = a.metric("websocket_redis_published_total");
    ca.send("X");
    eventually("pod-a's publisher got its answer", || a.metric("websocket_redis_published_total") > published);
    // Redis loses its data; pod-b is back first and numbers the room.
    let mut con = redis::Client::open(redis.url()).unwrap().get_connection().unwrap();
    let _: () = redis::cmd("FLUSHALL").query(&mut con).unwrap();
    pa.refuse_new(true);
    pa.mute_subscriptions(false);
    pb.mute_subscriptions(false);
    pa.cut();
    pb.cut();
    cb.send("Y");
    eventually("pod-b published Y", || cb.last_seq() >= 5);
    pa.refuse_new(false);
    eventually("pod-a is back and has Y", || ca.last_seq() >= 5);
    // Whatever pod-a does about X now (publishing it again), let it settle.
    std::thread::sleep(Duration::from_secs(3));
    let reports = vec![ca.finish(), cb.finish()];
    for (r, who) in reports.iter().zip(["ca", "cb"]) {
        assert!(r.texts.iter().any(|t| t == "X"), "{who}: X was delivered: {:?}", r.texts);
    }
    let seqs = assert_no_loss("race", &reports);
    await_stored(&mongo, "race", &seqs, Duration::from_secs(10));
    for s in [&a, &b] {
        assert_eq!(s.metric("websocket_mongo_seq_conflicts_total"), 0.0, "no seq given twice");
    }
    assert_eq!(a.metric("websocket_redis_republished_total"), 1.0, "pod-a published X again");
    assert!(a.logged("never came back through the subscription"), "and said so");
}

#[test]
fn a_mongodb_outage_of_ten_seconds_is_written_through_exactly_once() {
    let redis = Redis::start();
    let mut mongo = MongoWire::start();
    let servers: Vec<Server> = (0..3).map(|i| replica(&format!("pod-{i}"), &redis, Some(&mongo), &[])).collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let clients: Vec<Tracker> = (0..6).map(|i| Tracker::start(ports.clone(), i % 3, "m", &format!("c{i}"))).collect();
    let start = Instant::now();
    let (mut stopped, mut started) = (false, false);
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(14) {
        for (i, c) in clients.iter().enumerate() {
            c.send(&format!("m{n}-{i}"));
        }
        n += 1;
        if !stopped && start.elapsed() > Duration::from_secs(2) {
            mongo.stop();
            stopped = true;
        }
        if !started && start.elapsed() > Duration::from_secs(12) {
            mongo.start_again();
            started = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let reports: Vec<Report> = clients.into_iter().map(Tracker::finish).collect();
    let seqs = assert_no_loss("m", &reports);
    assert!(reports.iter().all(|r| r.refused.is_empty()), "chat goes on while MongoDB is down");
    await_stored(&mongo, "m", &seqs, Duration::from_secs(40));
    let retried: f64 = servers.iter().map(|s| s.metric("websocket_mongo_retried_total")).sum();
    assert!(retried >= 1.0, "writes were retried");
    for s in &servers {
        assert_eq!(s.metric("websocket_mongo_dropped_total"), 0.0);
        eventually("queue drained", || s.metric("websocket_mongo_queue_depth") == 0.0);
    }
}

#[test]
fn sigterm_of_one_replica_moves_its_clients_with_nothing_lost() {
    let redis = Redis::start();
    let mongo = MongoWire::start();
    let drain = [("DRAIN_DELAY_SECS", "0"), ("DRAIN_WINDOW_SECS", "1")];
    let mut servers: Vec<Server> = (0..3).map(|i| replica(&format!("pod-{i}"), &redis, Some(&mongo), &drain)).collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let clients: Vec<Tracker> = (0..9).map(|i| Tracker::start(ports.clone(), i % 3, "s", &format!("c{i}"))).collect();
    let start = Instant::now();
    let mut signalled = false;
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(6) {
        for (i, c) in clients.iter().enumerate() {
            c.send(&format!("s{n}-{i}"));
        }
        n += 1;
        if !signalled && start.elapsed() > Duration::from_secs(2) {
            servers[1].signal("TERM");
            signalled = true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(servers[1].wait_exit(Duration::from_secs(15)), Some(0), "the drained replica exits 0");
    let reports: Vec<Report> = clients.into_iter().map(Tracker::finish).collect();
    let moved = reports.iter().filter(|r| r.closes.contains(&1001)).count();
    assert_eq!(moved, 3, "the drained replica's clients got 1001");
    assert!(reports.iter().filter(|r| r.closes.contains(&1001)).all(|r| r.connections >= 2), "and reconnected");
    let seqs = assert_no_loss("s", &reports);
    assert!(reports.iter().all(|r| r.refused.is_empty()));
    await_stored(&mongo, "s", &seqs, Duration::from_secs(20));
}

#[test]
fn redis_down_refuses_with_unavailable_and_clients_stay_connected() {
    let mut redis = Redis::start();
    let server = replica("pod-x", &redis, None, &[]);
    let (mut ws, _) = join(&server, "room=u");
    send_chat(&mut ws, "before");
    assert_eq!(recv_chats(&mut ws, 1), vec![(1, "before".to_string())]);
    redis.stop();
    send_chat(&mut ws, "while down");
    let v = recv_json(&mut ws);
    assert_eq!((v["type"].as_str(), v["code"].as_str()), (Some("error"), Some("unavailable")), "{v}");
    eventually("redis_connected 0", || server.metric("websocket_redis_connected") == 0.0);
    redis.restart();
    eventually("redis_connected 1", || server.metric("websocket_redis_connected") == 1.0);
    send_chat(&mut ws, "after");
    assert_eq!(recv_chats(&mut ws, 1), vec![(2, "after".to_string())], "the sequence continues past Redis' data loss");
    assert!(server.logged("Redis subscription restored"));
}

#[test]
fn a_resend_through_another_replica_is_published_and_stored_once() {
    let redis = Redis::start();
    let mongo = MongoWire::start();
    let a = replica("pod-a", &redis, Some(&mongo), &[]);
    let b = replica("pod-b", &redis, Some(&mongo), &[]);
    let (mut watcher, _) = join(&b, "room=dup");
    let (mut on_a, _) = join(&a, "room=dup");
    send_chat_with_id(&mut on_a, "hello", "r-1");
    // Published (pod-a is the first to publish it) ...
    assert_eq!(recv_chats(&mut watcher, 1), vec![(1, "hello".to_string())]);
    // ... but the client lost pod-a before the echo and resends through pod-b.
    let (mut on_b, _) = join(&b, "room=dup");
    send_chat_with_id(&mut on_b, "hello", "r-1");
    send_chat_with_id(&mut on_b, "next", "r-2");
    let got = recv_chats(&mut watcher, 1);
    assert_eq!(got, vec![(2, "next".to_string())], "hello once, then next");
    await_stored(&mongo, "dup", &BTreeSet::from([1, 2]), Duration::from_secs(20));
    eventually("pod-b counted the resend", || b.metric("websocket_messages_deduplicated_total") == 1.0);
    assert_eq!(a.metric("websocket_messages_deduplicated_total"), 0.0);
}

#[test]
fn a_resume_ahead_of_this_replica_waits_for_it_instead_of_repeating_a_message() {
    // A client saw seq N+1 on another replica before this one's subscription
    // delivered it. Its resume must neither be `recovered:false` nor get N+1
    // again: the join waits until this replica has caught up.
    let redis = Redis::start();
    let server = replica("pod-lag", &redis, None, &[]);
    let (mut sender, _) = join(&server, "room=lag");
    send_chat(&mut sender, "one");
    assert_eq!(recv_chats(&mut sender, 1), vec![(1, "one".to_string())]);
    let mut ahead = connect(&server, "/ws?room=lag&since=2");
    send_chat(&mut sender, "two");
    send_chat(&mut sender, "three");
    let welcome = recv_json(&mut ahead);
    assert_eq!(welcome["type"], "system");
    assert_eq!(welcome["recovered"], true, "caught up, nothing missing: {welcome}");
    assert!(welcome["lastSeq"].as_u64().unwrap() >= 2);
    let history: Vec<u64> = welcome["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(history.iter().all(|&s| s > 2), "nothing at or below since: {history:?}");
    let next = if history.is_empty() { recv_chats(&mut ahead, 1)[0].0 } else { history[0] };
    assert_eq!(next, 3, "seq 2 is not repeated");

    // A resume ahead of a room that stays behind (its sequence restarted):
    // answered after the wait, `recovered:false`.
    let started = Instant::now();
    let (_, welcome) = join(&server, "room=lag&since=50");
    assert_eq!(welcome["recovered"], false, "{welcome}");
    assert!(started.elapsed() >= Duration::from_millis(900), "it waited for this replica to catch up first");
}

#[test]
fn a_replica_receives_only_the_rooms_it_has_members_in_and_a_late_joiner_misses_nothing() {
    let redis = Redis::start();
    let linger = [("ROOM_LINGER_SECS", "1")];
    let a = replica("pod-a", &redis, None, &linger);
    let b = replica("pod-b", &redis, None, &linger);
    let (mut sender, _) = join(&a, "room=hot");
    for i in 1..=20 {
        send_chat(&mut sender, &format!("m{i}"));
    }
    assert_eq!(recv_chats(&mut sender, 20).last().map(|c| c.0), Some(20));
    eventually("pod-a subscribed to its room", || a.metric("websocket_redis_subscribed_rooms") == 1.0);
    assert_eq!(b.metric("websocket_redis_received_total"), 0.0, "no member on pod-b: none of the room's traffic");
    assert_eq!(b.metric("websocket_redis_subscribed_rooms"), 0.0);

    // A client joins on pod-b while pod-a keeps sending: its resume from 0
    // plus what follows live is every message, once, in order.
    let sending = std::thread::spawn(move || {
        for i in 21..=80 {
            send_chat(&mut sender, &format!("m{i}"));
            std::thread::sleep(Duration::from_millis(3));
        }
        sender
    });
    let (mut late, welcome) = join(&b, "room=hot&since=0");
    let mut seqs: Vec<u64> =
        welcome["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    let mut sender = sending.join().unwrap();
    while seqs.last().copied().unwrap_or(0) < 80 {
        seqs.push(recv_chats(&mut late, 1)[0].0);
    }
    assert_eq!(seqs, (1..=80).collect::<Vec<u64>>(), "history then live: nothing lost, nothing twice");
    assert_eq!(welcome["recovered"], true, "{welcome}");
    let received = b.metric("websocket_redis_received_total");
    assert!(received <= 60.0, "pod-b received only what was published after it subscribed: {received}");

    // The last member leaves: after the linger the room is unsubscribed and
    // pod-b receives nothing of it any more.
    drop(late);
    eventually("pod-b unsubscribed after the linger", || b.metric("websocket_redis_subscribed_rooms") == 0.0);
    let before = b.metric("websocket_redis_received_total");
    for i in 81..=90 {
        send_chat(&mut sender, &format!("m{i}"));
    }
    assert_eq!(recv_chats(&mut sender, 90 - 80 + 60).last().map(|c| c.0), Some(90));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(b.metric("websocket_redis_received_total"), before, "unsubscribed: nothing received");

    // Joining again loads the room afresh (it was forgotten, not left stale).
    let (mut again, welcome) = join(&b, "room=hot&since=85");
    let history: Vec<u64> = welcome["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!((history, welcome["recovered"].as_bool()), ((86..=90).collect(), Some(true)), "{welcome}");
    send_chat(&mut sender, "m91");
    assert_eq!(recv_chats(&mut again, 1), vec![(91, "m91".to_string())]);
}
