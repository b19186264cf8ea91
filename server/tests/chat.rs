//! The chat contract against the real binary: join, broadcast across
//! workers, seq order, room isolation, history and resume.

mod common;

use common::*;

#[test]
fn welcome_frame_has_the_contract_fields() {
    let server = Server::start(&[("POD_NAME", "pod-a")]);
    let (_ws, w) = join(&server, "room=dev&name=ana");
    assert_eq!(w["message"], "Connected to pod: pod-a");
    assert_eq!(w["podName"], "pod-a");
    assert_eq!(w["room"], "dev");
    assert_eq!(w["lastSeq"], 0);
    assert!(w["connection"].as_u64().is_some());
    assert!(w["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(w["history"].as_array().unwrap().len(), 0);
    assert!(w.get("recovered").is_none(), "recovered only answers a since");
    // The default room and the `/` path.
    let (_ws, w) = join(&server, "");
    assert_eq!(w["room"], "lobby");
    let mut ws = connect(&server, "/?name=bob");
    assert_eq!(recv_json(&mut ws)["room"], "lobby");
}

#[test]
fn a_room_of_many_clients_across_workers_gets_every_message_in_seq_order() {
    let server = Server::start(&[("WORKERS", "2"), ("RATE_LIMIT", "1000"), ("RATE_BURST", "1000")]);
    let mut clients: Vec<Ws> = (0..40).map(|i| join(&server, &format!("room=big&name=u{i}")).0).collect();
    let per_worker: Vec<f64> =
        (0..2).map(|w| server.metric(&format!("websocket_worker_connections_active{{worker=\"{w}\"}}"))).collect();
    assert_eq!(per_worker.iter().sum::<f64>(), 40.0);
    assert!(per_worker.iter().all(|&n| n > 0.0), "both workers hold clients: {per_worker:?}");

    // Several senders interleave; everyone sees the same sequence, gap-free.
    for round in 0..5 {
        for sender in 0..4 {
            send_chat(&mut clients[sender * 10], &format!("m{round}-{sender}"));
        }
    }
    let mut reference: Option<Vec<(u64, String)>> = None;
    for ws in clients.iter_mut() {
        let got = recv_chats(ws, 20);
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=20).collect::<Vec<u64>>(), "seq 1..20 with no gap or duplicate");
        match &reference {
            None => reference = Some(got),
            Some(r) => assert_eq!(&got, r, "every member sees the same order"),
        }
    }
    let texts: Vec<&str> = reference.as_ref().unwrap().iter().map(|(_, t)| t.as_str()).collect();
    for sender in 0..4 {
        let mine: Vec<&&str> = texts.iter().filter(|t| t.ends_with(&format!("-{sender}"))).collect();
        assert_eq!(mine.len(), 5, "each sender's messages, its own included");
    }
    assert_eq!(server.metric("websocket_messages_received_total"), 20.0);
    assert_eq!(server.metric("websocket_messages_delivered_total"), 800.0);
}

#[test]
fn rooms_are_isolated_and_sequenced_separately() {
    let server = Server::start(&[]);
    let (mut a1, _) = join(&server, "room=a");
    let (mut a2, _) = join(&server, "room=a");
    let (mut b1, _) = join(&server, "room=b");
    send_chat(&mut a1, "for a");
    send_chat(&mut b1, "for b");
    assert_eq!(recv_chats(&mut a2, 1), vec![(1, "for a".to_string())]);
    assert_eq!(recv_chats(&mut b1, 1), vec![(1, "for b".to_string())], "b has its own seq 1");
    // a2 must not see b's message: the next frame it gets is a's second message.
    send_chat(&mut a1, "again a");
    assert_eq!(recv_chats(&mut a2, 1), vec![(2, "again a".to_string())]);
}

#[test]
fn chat_frames_carry_sender_pod_and_username() {
    let server = Server::start(&[("POD_NAME", "pod-z")]);
    let (mut ws, _) = join(&server, "room=r&name=carla");
    send_chat(&mut ws, "plain");
    ws.send(tungstenite::Message::text(r#"{"type":"chat","username":"override","message":"named"}"#)).unwrap();
    let first = recv_json(&mut ws);
    assert_eq!(
        (first["type"].as_str(), first["username"].as_str(), first["podName"].as_str()),
        (Some("chat"), Some("carla"), Some("pod-z"))
    );
    assert_eq!(first["room"], "r");
    assert!(first["id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
    let second = recv_json(&mut ws);
    assert_eq!(second["username"], "override");
    assert_ne!(first["id"], second["id"]);
}

#[test]
fn history_on_join_and_resume_with_since() {
    let server = Server::start(&[("HISTORY_ON_JOIN", "5"), ("HISTORY_RING", "10"), ("RATE_BURST", "50")]);
    let (mut sender, _) = join(&server, "room=h");
    for i in 1..=15 {
        send_chat(&mut sender, &format!("msg {i}"));
    }
    recv_chats(&mut sender, 15);

    let (_ws, w) = join(&server, "room=h");
    let seqs: Vec<u64> = w["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![11, 12, 13, 14, 15], "the last HISTORY_ON_JOIN, oldest first");
    assert_eq!(w["lastSeq"], 15);

    let (_ws, w) = join(&server, "room=h&since=12");
    let seqs: Vec<u64> = w["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!((seqs, &w["recovered"]), (vec![13, 14, 15], &serde_json::json!(true)));

    let (_ws, w) = join(&server, "room=h&since=15");
    assert_eq!((w["history"].as_array().unwrap().len(), &w["recovered"]), (0, &serde_json::json!(true)));

    let (_ws, w) = join(&server, "room=h&since=2");
    assert_eq!(w["recovered"], false, "seq 3..5 are no longer in the ring of 10");
    assert_eq!(w["history"].as_array().unwrap().len(), 10);

    // Live messages continue after the snapshot with no gap.
    let (mut resumed, w) = join(&server, "room=h&since=14");
    assert_eq!(w["history"][0]["seq"], 15);
    send_chat(&mut sender, "live");
    assert_eq!(recv_chats(&mut resumed, 1), vec![(16, "live".to_string())]);

    // GET /history: newest first, limited.
    let (status, head, body) = http_get(server.port, "/history?room=h&limit=3");
    assert_eq!(status, 200);
    assert!(head.contains("application/json"));
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let seqs: Vec<u64> = list.as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, vec![16, 15, 14]);
    let (_, _, body) = http_get(server.port, "/history?room=h");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap().as_array().unwrap().len(), 10);
    assert_eq!(http_get(server.port, "/history?room=none").2, "[]");
}

#[test]
fn joins_racing_a_busy_room_see_no_gap_and_no_duplicate() {
    let server = Server::start(&[("RATE_LIMIT", "1000"), ("RATE_BURST", "1000"), ("WORKERS", "2")]);
    let (mut sender, _) = join(&server, "room=race");
    let total = 300;
    let writer = std::thread::spawn(move || {
        for i in 0..total {
            send_chat(&mut sender, &format!("r{i}"));
            if i % 10 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        sender
    });
    // Clients join while messages flow; each must see a contiguous run ending at `total`.
    let mut joiners = Vec::new();
    for _ in 0..20 {
        joiners.push(join(&server, "room=race"));
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    let _sender = writer.join().unwrap();
    for (mut ws, welcome) in joiners {
        let mut expect = welcome["lastSeq"].as_u64().unwrap() + 1;
        while expect <= total {
            let (seq, _) = recv_chats(&mut ws, 1)[0].clone();
            assert_eq!(seq, expect, "joined at {}", welcome["lastSeq"]);
            expect += 1;
        }
    }
}

#[test]
fn a_resend_with_the_same_client_id_is_published_once() {
    let server = Server::start(&[]);
    let (mut a, _) = join(&server, "room=once&name=ana");
    let (mut watcher, _) = join(&server, "room=once");
    let (mut other_room, _) = join(&server, "room=elsewhere");
    send_chat_with_id(&mut a, "first", "k-1");
    // The page lost its connection before the echo: it resends on a new one.
    let (mut a2, _) = join(&server, "room=once&name=ana");
    send_chat_with_id(&mut a2, "first", "k-1");
    send_chat_with_id(&mut a2, "second", "k-2");
    // The same clientId in another room is another message.
    send_chat_with_id(&mut other_room, "elsewhere", "k-1");
    let first = recv_json(&mut watcher);
    assert_eq!((first["seq"].as_u64(), first["message"].as_str()), (Some(1), Some("first")));
    assert_eq!(first["clientId"], "k-1", "the chat frame carries the sender's clientId");
    let second = recv_json(&mut watcher);
    assert_eq!(
        (second["seq"].as_u64(), second["message"].as_str(), second["clientId"].as_str()),
        (Some(2), Some("second"), Some("k-2")),
        "the resend of k-1 was not published again"
    );
    assert_eq!(recv_chats(&mut other_room, 1), vec![(1, "elsewhere".to_string())]);
    eventually("the resend is counted", || server.metric("websocket_messages_deduplicated_total") == 1.0);
    // A resume's history carries the clientId too, so a client can match it.
    let (_, welcome) = join(&server, "room=once&since=0");
    assert_eq!(welcome["history"][0]["clientId"], "k-1");
    let (mut c, _) = join(&server, "room=quiet");
    c.send(tungstenite::Message::text(r#"{"type":"chat","message":"x","clientId":"not valid!"}"#)).unwrap();
    let err = recv_json(&mut c);
    assert_eq!((err["type"].as_str(), err["code"].as_str()), (Some("error"), Some("bad_client_id")));
}
