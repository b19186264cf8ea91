//! Unit tests of `chat::session`: the actions returned for joins, resumes
//! and client messages, checked without sockets.

use super::*;
use serde_json::Value;

const LIMITS: MessageLimits = MessageLimits { rate: 10.0, burst: 3, max_chat_bytes: 20 };
const ORIGIN: Origin = Origin { worker: 1, key: 7, conn_id: 42 };

fn session(since: Option<u64>) -> ChatSession {
    ChatSession::new(Arc::from("lobby"), since, "anon".into(), LIMITS.burst, 0)
}

fn ctx(now: u32) -> JoinContext<'static> {
    JoinContext { pod_name: "pod-a", conn_id: 42, history_on_join: 2, now }
}

/// A history holding messages 1..=last of room `lobby`.
fn history(backing: Backing, last: u64) -> History {
    let h = History::new(100, 1 << 20, backing);
    let room: Arc<str> = Arc::from("lobby");
    let entries = (1..=last).map(|seq| Entry::new(seq, &format!(r#"{{"seq":{seq}}}"#))).collect();
    h.merge_recent(&room, entries);
    h
}

/// The welcome's JSON, or a panic naming what came instead.
fn welcome(action: Option<Action>) -> Value {
    match action {
        Some(Action::Welcome(json)) => serde_json::from_str(&json).unwrap(),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

fn seqs(welcome: &Value) -> Vec<u64> {
    welcome["history"].as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect()
}

fn text(actions: Actions) -> Vec<Action> {
    actions.into_iter().collect()
}

fn rejected(actions: Vec<Action>) -> Reject {
    match <[Action; 1]>::try_from(actions) {
        Ok([Action::Reject(r)]) => r,
        Ok([other]) => panic!("expected a reject, got {other:?}"),
        Err(v) => panic!("expected one action, got {v:?}"),
    }
}

#[test]
fn a_join_without_since_welcomes_with_the_last_messages_and_skips_what_it_holds() {
    let h = history(Backing::Memory, 5);
    let mut s = session(None);
    assert!(s.begin_join(&h, true).is_none(), "memory is complete: no load");
    let w = welcome(s.complete_join(&h, &[], false, ctx(0)));
    assert_eq!(w["type"], "system");
    assert_eq!(w["podName"], "pod-a");
    assert_eq!(w["connection"], 42);
    assert_eq!(w["room"], "lobby");
    assert_eq!(w["lastSeq"], 5);
    assert_eq!(seqs(&w), [4, 5], "HISTORY_ON_JOIN = 2");
    assert!(w.get("recovered").is_none());
    assert!(s.joined);
    assert_eq!(s.delivered, 5, "broadcasts up to the snapshot are skipped");
    assert!(s.complete_join(&h, &[], false, ctx(0)).is_none(), "a second completion does nothing");
}

#[test]
fn a_cold_room_or_a_deep_resume_asks_the_loader_first() {
    let cold = History::new(100, 1 << 20, Backing::Store { deep: true });
    assert!(matches!(session(None).begin_join(&cold, true), Some(Action::Load { since: None })));
    assert!(session(None).begin_join(&cold, false).is_none(), "no loader: join with what is here");
    // The ring holds 1..=5 after a load; a resume from 0 reaches below it only if it starts later.
    let h = History::new(3, 1 << 20, Backing::Store { deep: true });
    let room: Arc<str> = Arc::from("lobby");
    h.merge_recent(&room, (1..=5).map(|seq| Entry::new(seq, "{}")).collect());
    assert!(matches!(session(Some(1)).begin_join(&h, true), Some(Action::Load { since: Some(1) })));
    assert!(session(Some(3)).begin_join(&h, true).is_none(), "3 is the ring's first seq: nothing older needed");
}

#[test]
fn a_resume_gets_what_it_missed_and_is_told_it_recovered() {
    let h = history(Backing::Memory, 5);
    let mut s = session(Some(2));
    let w = welcome(s.complete_join(&h, &[], false, ctx(0)));
    assert_eq!(seqs(&w), [3, 4, 5]);
    assert_eq!(w["recovered"], true);
    assert_eq!(s.delivered, 5);
    // Older messages loaded from the store fill the gap below the ring.
    let h = History::new(2, 1 << 20, Backing::Store { deep: true });
    h.merge_recent(&Arc::from("lobby"), (1..=5).map(|seq| Entry::new(seq, &format!(r#"{{"seq":{seq}}}"#))).collect());
    let older: Vec<Entry> = (2..=3).map(|seq| Entry::new(seq, &format!(r#"{{"seq":{seq}}}"#))).collect();
    let w = welcome(session(Some(1)).complete_join(&h, &older, false, ctx(0)));
    assert_eq!(seqs(&w), [2, 3, 4, 5]);
    assert_eq!(w["recovered"], true);
}

#[test]
fn a_resume_ahead_of_this_pod_waits_then_joins_unrecovered() {
    let h = history(Backing::Store { deep: false }, 5);
    let mut s = session(Some(8));
    match s.complete_join(&h, &[], false, ctx(100)) {
        Some(Action::CatchUp { deadline }) => assert_eq!(deadline, 100 + CATCH_UP_SECS),
        other => panic!("expected a wait, got {other:?}"),
    }
    assert!(!s.joined);
    let w = welcome(s.complete_join(&h, &[], true, ctx(102)));
    assert_eq!(w["recovered"], false, "still behind after the wait: the sequence restarted");
    assert_eq!(s.delivered, 5);
    // A single node without a store has nothing to wait for.
    let w = welcome(session(Some(8)).complete_join(&history(Backing::Memory, 5), &[], false, ctx(0)));
    assert_eq!(w["recovered"], false);
}

#[test]
fn waiting_resumes_complete_when_the_room_reaches_since_or_at_the_deadline() {
    assert!(caught_up("lobby", 8, Some(("lobby", 8)), 0, 10));
    assert!(caught_up("lobby", 8, Some(("lobby", 9)), 0, 10));
    assert!(!caught_up("lobby", 8, Some(("lobby", 7)), 0, 10));
    assert!(!caught_up("lobby", 8, Some(("other", 9)), 0, 10));
    assert!(!caught_up("lobby", 8, None, 9, 10));
    assert!(caught_up("lobby", 8, None, 10, 10));
}

#[test]
fn a_chat_frame_becomes_the_message_to_publish() {
    let mut s = session(None);
    let actions = text(s.on_text(r#"{"type":"chat","message":"hi","clientId":"c-1"}"#, &LIMITS, 0, 1234, None, ORIGIN));
    let [Action::Publish(p)] = &actions[..] else { panic!("expected a publish, got {actions:?}") };
    assert_eq!(&*p.room, "lobby");
    assert_eq!(p.username, "anon", "no username in the frame: the session's name");
    assert_eq!(p.message, "hi");
    assert_eq!(p.client_id.as_deref(), Some("c-1"));
    assert_eq!(p.timestamp_ms, 1234);
    assert_eq!(p.user_id, None);
    assert_eq!(p.origin, ORIGIN);
    let actions = text(s.on_text(r#"{"type":"chat","username":"bob","message":"x"}"#, &LIMITS, 0, 0, None, ORIGIN));
    let [Action::Publish(p)] = &actions[..] else { panic!("expected a publish, got {actions:?}") };
    assert_eq!(p.username, "bob");
}

#[test]
fn with_a_token_the_name_is_the_tokens_and_the_user_id_is_sent() {
    let mut s = session(None);
    let frame = r#"{"type":"chat","username":"mallory","message":"hi"}"#;
    let actions = text(s.on_text(frame, &LIMITS, 0, 0, Some("user-9"), ORIGIN));
    let [Action::Publish(p)] = &actions[..] else { panic!("expected a publish, got {actions:?}") };
    assert_eq!(p.username, "anon", "the frame's username is ignored");
    assert_eq!(p.user_id.as_deref(), Some("user-9"));
}

#[test]
fn bad_frames_get_an_error_frame_and_nothing_is_published() {
    let mut s = session(None);
    let r = rejected(text(s.on_text("not json", &LIMITS, 0, 0, None, ORIGIN)));
    assert_eq!(r.code, "bad_json");
    let r = rejected(text(s.on_text("[1,2]", &LIMITS, 0, 0, None, ORIGIN)));
    assert_eq!(r.code, "bad_json");
    let r = rejected(text(s.on_text(r#"{"type":"join"}"#, &LIMITS, 0, 0, None, ORIGIN)));
    assert_eq!(r.code, "unknown_type");
    let long = format!(r#"{{"type":"chat","message":"{}"}}"#, "x".repeat(21));
    let r = rejected(text(s.on_text(&long, &LIMITS, 0, 0, None, ORIGIN)));
    assert_eq!(r.code, "too_long");
    assert_eq!(r.message, "message is 21 bytes; the limit is 20");
    // Refused frames take no token from the bucket: three messages still pass.
    for _ in 0..3 {
        let actions = text(s.on_text(r#"{"type":"chat","message":"ok"}"#, &LIMITS, 0, 0, None, ORIGIN));
        assert!(matches!(actions[..], [Action::Publish(_)]), "{actions:?}");
    }
    assert_eq!(rejected(vec![on_binary()]).code, "unsupported");
}

#[test]
fn the_rate_limit_rejects_then_closes_after_ten_strikes_in_a_row() {
    let mut s = session(None);
    let frame = r#"{"type":"chat","message":"hi"}"#;
    for _ in 0..LIMITS.burst {
        assert!(matches!(text(s.on_text(frame, &LIMITS, 0, 0, None, ORIGIN))[..], [Action::Publish(_)]));
    }
    let r = rejected(text(s.on_text(frame, &LIMITS, 0, 0, None, ORIGIN)));
    assert_eq!(r.code, "rate_limited");
    assert_eq!(r.message, "more than 10 messages per second; message not sent");
    assert_eq!(s.strikes, 1);
    // 100 ms later one token is back (10/s): accepted, the strikes reset.
    assert!(matches!(text(s.on_text(frame, &LIMITS, 100, 0, None, ORIGIN))[..], [Action::Publish(_)]));
    assert_eq!(s.strikes, 0);
    for strike in 1..MAX_STRIKES {
        assert_eq!(rejected(text(s.on_text(frame, &LIMITS, 100, 0, None, ORIGIN))).code, "rate_limited");
        assert_eq!(s.strikes, strike);
    }
    let actions = text(s.on_text(frame, &LIMITS, 100, 0, None, ORIGIN));
    match &actions[..] {
        [Action::Reject(r), Action::Close { code: 1008, text: "rate limit exceeded", reason: CloseReason::RateLimit }] =>
        {
            assert_eq!(r.code, "rate_limited");
        }
        other => panic!("expected a reject and a 1008 close, got {other:?}"),
    }
    assert_eq!(overloaded().code, "unavailable");
}
