//! The publish script against a real redis-server: one call numbers,
//! stores and publishes several rooms' messages; a retry in doubt is found
//! by its id in the room's list; a clientId resend is answered with `-SEQ`;
//! the floor keeps a room's sequence going after Redis lost its data.

mod common;

use common::{chat_message as msg, publish_call, Redis, RoomPart};
use websocket_server::chat::protocol::ChatMessage;
use websocket_server::replica::{channel, client_key, history_key};

/// A standalone call.
fn publish(con: &mut redis::Connection, rooms: &[RoomPart<'_>]) -> Vec<i64> {
    publish_call(con, false, rooms)
}

fn listed(con: &mut redis::Connection, room: &str) -> Vec<u64> {
    let items: Vec<String> = redis::cmd("LRANGE").arg(history_key(room)).arg(0).arg(-1).query(con).unwrap();
    items.iter().map(|i| i.split_once(' ').unwrap().0.parse().unwrap()).collect()
}

#[test]
fn one_call_numbers_several_rooms_and_retries_publish_nothing_twice() {
    let redis = Redis::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut sub = client.get_connection().unwrap();
    sub.send_packed_command(&redis::cmd("SSUBSCRIBE").arg(channel("a")).get_packed_command()).unwrap();
    let confirmed = sub.recv_response().unwrap();
    assert!(format!("{confirmed:?}").contains("ssubscribe"), "{confirmed:?}");

    let (a1, a2, b1) = (msg("a", "a1", None), msg("a", "a2", Some("c-1")), msg("b", "b1", None));
    let got =
        publish(&mut con, &[("a", 0, vec![(a1.clone(), false), (a2.clone(), false)]), ("b", 0, vec![(b1, false)])]);
    assert_eq!(got, vec![1, 2, 1]);
    assert_eq!((listed(&mut con, "a"), listed(&mut con, "b")), (vec![1, 2], vec![1]));
    // The room's two messages went out in one publish, a line each.
    let redis::Value::Array(push) = sub.recv_response().unwrap() else { panic!("not a push") };
    let payload: String = redis::from_redis_value(push[2].clone()).unwrap();
    let seqs: Vec<&str> = payload.lines().map(|l| l.split_once(' ').unwrap().0).collect();
    assert_eq!(seqs, vec!["1", "2"]);
    // Only the message with a clientId leaves a marker.
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    assert_eq!(keys.iter().filter(|k| k.contains(":client:") || k.contains(":msg:")).count(), 1, "{keys:?}");
    assert!(keys.contains(&client_key("a", "c-1")), "the script names keys as the server does: {keys:?}");

    // The call is retried after a lost reply: in doubt, found by id, not numbered again.
    let got = publish(&mut con, &[("a", 0, vec![(a1.clone(), true), (a2.clone(), true)])]);
    assert_eq!(got, vec![1, 2]);
    assert_eq!(listed(&mut con, "a"), vec![1, 2], "nothing appended twice");
    // A client's resend of a2 through another pod (another id, same clientId).
    let resend = msg("a", "other-pod-id", Some("c-1"));
    assert_eq!(publish(&mut con, &[("a", 0, vec![(resend, false)])]), vec![-2]);
    // A message in doubt that had not run is published.
    let a3 = msg("a", "a3", None);
    assert_eq!(publish(&mut con, &[("a", 0, vec![(a3, true)])]), vec![3]);

    // Redis loses its data: the floor (the pod's known seq) continues the sequence.
    redis::cmd("FLUSHALL").query::<()>(&mut con).unwrap();
    assert_eq!(publish(&mut con, &[("a", 3, vec![(msg("a", "a4", None), false)])]), vec![4]);
    // The ring bound (5 here) holds.
    let more: Vec<(ChatMessage, bool)> = (5..=12).map(|i| (msg("a", &format!("a{i}"), None), false)).collect();
    assert_eq!(publish(&mut con, &[("a", 4, more)]), (5..=12).collect::<Vec<i64>>());
    assert_eq!(listed(&mut con, "a"), vec![8, 9, 10, 11, 12]);
}
