//! Token authentication, per-room permissions and per-address limits,
//! against the real binary over real sockets: tokens are minted here with
//! the same `jsonwebtoken` crate, keys are the PEM fixtures in
//! `tests/fixtures/` (test-only keys, made with `openssl genpkey`).

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tungstenite::Message;

const SECRET: &str = "test-secret-of-at-least-32-bytes-0123456789";

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// An HS256 token signed with `SECRET`.
fn hs256(claims: Value) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

fn valid(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600})
}

fn auth_server(extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("AUTH_JWT_SECRET", SECRET)];
    env.extend_from_slice(extra);
    Server::start(&env)
}

/// Tries an upgrade; the HTTP status and body (101 and "" on success).
fn try_upgrade(server: &Server, query: &str) -> (u16, String) {
    match tungstenite::connect(server.url(&format!("/ws?{query}"))) {
        Ok((_ws, resp)) => (resp.status().as_u16(), String::new()),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            (resp.status().as_u16(), body)
        }
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

/// Tries an upgrade and returns the full response head too.
fn upgrade_raw(server: &Server, query: &str, extra: &str) -> (u16, String, String) {
    http_raw(
        server.port,
        &format!(
            "GET /ws?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        ),
    )
}

fn refusals(server: &Server, reason: &str) -> f64 {
    server.metric(&format!("websocket_auth_refusals_total{{reason=\"{reason}\"}}"))
}

#[test]
fn a_valid_token_joins_and_posts_under_its_own_name_whatever_the_client_says() {
    let server = auth_server(&[]);
    let ana = hs256(json!({"sub": "u-1", "name": "Ana", "exp": now() + 600}));
    // The `name` parameter cannot override the token's name.
    let (mut ws, welcome) = join(&server, &format!("room=r&name=Mallory&token={ana}"));
    assert_eq!(welcome["room"], "r");
    // Nor can a frame's `username`: ignored, published under the token's name.
    ws.send(Message::text(json!({"type": "chat", "username": "Mallory", "message": "hi"}).to_string())).unwrap();
    let v = recv_json(&mut ws);
    assert_eq!(
        (v["type"].as_str(), v["username"].as_str(), v["userId"].as_str()),
        (Some("chat"), Some("Ana"), Some("u-1"))
    );
    // Without a name claim, the name is the sub.
    let (mut bob, _) = join(&server, &format!("room=r&token={}", hs256(valid("bob-42"))));
    send_chat(&mut bob, "yo");
    let v = recv_json(&mut bob);
    assert_eq!((v["username"].as_str(), v["userId"].as_str()), (Some("bob-42"), Some("bob-42")));
    // A sub longer than a name: the name is its first 32 characters, the user id all of it.
    let long = "u".repeat(30) + "-0123456789";
    let (mut carl, _) = join(&server, &format!("room=r2&token={}", hs256(valid(&long))));
    send_chat(&mut carl, "hey");
    let v = recv_json(&mut carl);
    assert_eq!((v["username"].as_str(), v["userId"].as_str()), (Some(&long[..32]), Some(&long[..])));
    // /history carries them too, with the token in the header.
    let (status, _, body) = http_raw(
        server.port,
        &format!("GET /history?room=r HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ana}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 200, "{body}");
    let h: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((h[0]["username"].as_str(), h[1]["username"].as_str()), (Some("bob-42"), Some("Ana")));
    assert_eq!(h[1]["userId"], "u-1");
}

#[test]
fn bad_tokens_are_refused_with_their_status_and_counter() {
    let server = auth_server(&[]);
    let t = now();
    let other_key = encode(
        &Header::new(Algorithm::HS256),
        &valid("u"),
        &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!!"),
    )
    .unwrap();
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", b64(json!({"alg": "none", "typ": "JWT"})), b64(valid("u")));
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("no token", String::new(), 401, "missing"),
        ("expired", hs256(json!({"sub": "u", "exp": t - 10})), 401, "expired"),
        ("not yet valid", hs256(json!({"sub": "u", "exp": t + 600, "nbf": t + 300})), 401, "not_yet_valid"),
        ("wrong signature", other_key, 401, "bad_signature"),
        ("alg none", none, 401, "bad_algorithm"),
        ("missing exp", hs256(json!({"sub": "u"})), 401, "missing_claim"),
        ("missing sub", hs256(json!({"exp": t + 600})), 401, "missing_claim"),
        ("malformed", "not.a.jwt".to_string(), 401, "malformed"),
        ("garbage", "x".to_string(), 401, "malformed"),
        ("an aud, none configured", hs256(json!({"sub": "u", "exp": t + 600, "aud": "other"})), 401, "bad_audience"),
        ("bad name claim", hs256(json!({"sub": "u", "exp": t + 600, "name": ""})), 401, "bad_claims"),
        ("rooms as a string", hs256(json!({"sub": "u", "exp": t + 600, "rooms": "r"})), 401, "malformed"),
    ];
    for (what, token, status, reason) in cases {
        let before = refusals(&server, reason);
        let query = if token.is_empty() { "room=r".to_string() } else { format!("room=r&token={token}") };
        let (got, head, body) = upgrade_raw(&server, &query, "");
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(body.lines().count(), 1, "{what}: one line: {body:?}");
        assert!(token.is_empty() || !body.contains(&token), "{what}: the body echoes the token");
        assert!(head.contains("WWW-Authenticate: Bearer"), "{what}: {head}");
        assert_eq!(refusals(&server, reason), before + 1.0, "{what}: counted as {reason}");
    }
    // /history alike, in the query or the header.
    let expired = hs256(json!({"sub": "u", "exp": t - 10}));
    assert_eq!(http_get(server.port, "/history?room=r").0, 401);
    assert_eq!(http_get(server.port, &format!("/history?room=r&token={expired}")).0, 401);
    let (status, _, _) = http_raw(
        server.port,
        &format!("GET /history HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {expired}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(status, 401);
    assert_eq!(server.metric("websocket_http_responses_total{status=\"401\"}"), 15.0);
    // Auth does not cover the operators' endpoints.
    assert_eq!(http_get(server.port, "/health").0, 200);
}

#[test]
fn issuer_and_audience_are_required_when_configured() {
    let server = auth_server(&[("AUTH_JWT_ISSUER", "https://issuer.example"), ("AUTH_JWT_AUDIENCE", "chat")]);
    let t = now() + 600;
    let good = hs256(json!({"sub": "u", "exp": t, "iss": "https://issuer.example", "aud": "chat"}));
    assert_eq!(try_upgrade(&server, &format!("token={good}")).0, 101);
    let cases = [
        (json!({"sub": "u", "exp": t, "iss": "https://issuer.example", "aud": "other"}), "bad_audience"),
        (json!({"sub": "u", "exp": t, "iss": "https://evil.example", "aud": "chat"}), "bad_issuer"),
        (json!({"sub": "u", "exp": t, "aud": "chat"}), "missing_claim"),
        (json!({"sub": "u", "exp": t, "iss": "https://issuer.example"}), "missing_claim"),
    ];
    for (claims, reason) in cases {
        let (status, body) = try_upgrade(&server, &format!("token={}", hs256(claims.clone())));
        assert_eq!(status, 401, "{claims}: {body}");
        assert!(refusals(&server, reason) >= 1.0, "{claims}: counted as {reason}");
    }
}

#[test]
fn public_keys_pin_their_family_against_hmac_confusion() {
    let rsa_public = std::fs::read(fixture("rsa-public.pem")).unwrap();
    let server = Server::start(&[("AUTH_JWT_PUBLIC_KEY_FILE", &fixture("rsa-public.pem"))]);
    let key = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa-private.pem")).unwrap()).unwrap();
    for alg in [Algorithm::RS256, Algorithm::RS512, Algorithm::PS256] {
        let token = encode(&Header::new(alg), &valid("u"), &key).unwrap();
        assert_eq!(try_upgrade(&server, &format!("token={token}")).0, 101, "{alg:?}");
    }
    // The classic confusion: HS256 with the public key (as the server holds it) as the secret.
    let forged =
        encode(&Header::new(Algorithm::HS256), &valid("admin"), &EncodingKey::from_secret(&rsa_public)).unwrap();
    let (status, body) = try_upgrade(&server, &format!("token={forged}"));
    assert_eq!(status, 401, "{body}");
    assert_eq!(refusals(&server, "bad_algorithm"), 1.0);
    // An RSA token signed by another key.
    let ec = EncodingKey::from_ec_pem(&std::fs::read(fixture("ec-private.pem")).unwrap()).unwrap();
    let es = encode(&Header::new(Algorithm::ES256), &valid("u"), &ec).unwrap();
    assert_eq!(try_upgrade(&server, &format!("token={es}")).0, 401, "ES256 against an RSA key");

    for (public, private, alg) in
        [("ec-public.pem", "ec-private.pem", Algorithm::ES256), ("ed-public.pem", "ed-private.pem", Algorithm::EdDSA)]
    {
        let server = Server::start(&[("AUTH_JWT_PUBLIC_KEY_FILE", &fixture(public))]);
        let pem = std::fs::read(fixture(private)).unwrap();
        let key = if alg == Algorithm::EdDSA {
            EncodingKey::from_ed_pem(&pem).unwrap()
        } else {
            EncodingKey::from_ec_pem(&pem).unwrap()
        };
        let token = encode(&Header::new(alg), &valid("u"), &key).unwrap();
        assert_eq!(try_upgrade(&server, &format!("token={token}")).0, 101, "{alg:?}");
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &valid("u"),
            &EncodingKey::from_secret(&std::fs::read(fixture(public)).unwrap()),
        )
        .unwrap();
        assert_eq!(try_upgrade(&server, &format!("token={forged}")).0, 401, "HS256 against {alg:?}");
    }
}

#[test]
fn the_rooms_claim_is_enforced_on_the_upgrade_and_on_history() {
    let server = auth_server(&[]);
    let token = hs256(json!({"sub": "u", "exp": now() + 600, "rooms": ["lobby", "team-*"]}));
    for room in ["lobby", "team-a", "team-"] {
        assert_eq!(try_upgrade(&server, &format!("room={room}&token={token}")).0, 101, "{room}");
        assert_eq!(http_get(server.port, &format!("/history?room={room}&token={token}")).0, 200, "{room}");
    }
    for room in ["other", "lobby2", "team"] {
        let (status, body) = try_upgrade(&server, &format!("room={room}&token={token}"));
        assert_eq!(status, 403, "{room}");
        assert_eq!(body.trim(), format!("the token does not grant room {room}"));
        let (status, _, body) = http_raw(
            server.port,
            &format!("GET /history?room={room} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
        );
        assert_eq!(status, 403, "{room}: {body}");
    }
    // The default room is checked too.
    assert_eq!(try_upgrade(&server, &format!("token={token}")).0, 101, "lobby by default");
    let only_a = hs256(json!({"sub": "u", "exp": now() + 600, "rooms": ["a"]}));
    assert_eq!(try_upgrade(&server, &format!("token={only_a}")).0, 403, "the default room is not granted");
    assert_eq!(refusals(&server, "room_forbidden"), 7.0);
    assert_eq!(server.metric("websocket_http_responses_total{status=\"403\"}"), 7.0);
}

#[test]
fn the_connection_is_closed_at_exp_with_4001() {
    let server = auth_server(&[]);
    let exp = now() + 2;
    let token = hs256(json!({"sub": "u", "exp": exp}));
    let (mut ws, _) = join(&server, &format!("room=x&token={token}"));
    send_chat(&mut ws, "before");
    assert_eq!(recv_chats(&mut ws, 1)[0].1, "before");
    let start = Instant::now();
    let ws_ref = ws.get_ref();
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws_ref {
        s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    }
    let code = recv_close(&mut ws);
    assert_eq!(code, 4001);
    let closed_at = now();
    assert!(closed_at >= exp, "closed at {closed_at}, before exp {exp}");
    assert!(start.elapsed() < Duration::from_secs(5), "closed {:?} after join", start.elapsed());
    eventually("the close is counted", || server.metric("websocket_closes_total{reason=\"token_expired\"}") == 1.0);
    // A fresh token resumes where it left off.
    let (_ws, welcome) = join(&server, &format!("room=x&since=1&token={}", hs256(valid("u"))));
    assert_eq!((welcome["lastSeq"].as_u64(), welcome["recovered"].as_bool()), (Some(1), Some(true)));
}

#[test]
fn no_token_text_appears_in_any_log_line_at_trace() {
    let server = auth_server(&[("LOG_LEVEL", "trace")]);
    let good = hs256(json!({"sub": "u", "exp": now() + 600, "rooms": ["ok"]}));
    let expired = hs256(json!({"sub": "u", "exp": now() - 5}));
    let (mut ws, _) = join(&server, &format!("room=ok&name=n&token={good}"));
    send_chat(&mut ws, "hello");
    recv_chats(&mut ws, 1);
    assert_eq!(try_upgrade(&server, &format!("room=no&token={good}")).0, 403);
    assert_eq!(try_upgrade(&server, &format!("room=ok&token={expired}")).0, 401);
    assert_eq!(try_upgrade(&server, "room=ok&token=garbage-token-text").0, 401);
    let _ = http_raw(
        server.port,
        &format!(
            "GET /history?room=ok HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {good}\r\nConnection: close\r\n\r\n"
        ),
    );
    let _ = http_get(server.port, &format!("/history?room=ok&token={expired}"));
    drop(ws);
    eventually("the requests are logged", || server.logged("GET /history?room=ok&token=<redacted>"));
    assert!(server.logged("GET /ws?room=ok&name=n&token=<redacted>"));
    let log = server.log.lock().unwrap().join("\n");
    for token in [&good, &expired] {
        for part in token.split('.') {
            assert!(!log.contains(part), "a token part appears in the log:\n{log}");
        }
    }
    assert!(!log.contains("garbage-token-text"));
}

#[test]
fn per_address_limits_answer_429_with_retry_after() {
    let server = Server::start(&[("MAX_CONNECTIONS_PER_IP", "2")]);
    let (a, _) = join(&server, "room=l");
    let (_b, _) = join(&server, "room=l");
    let (status, head, body) = upgrade_raw(&server, "room=l", "");
    assert_eq!(status, 429, "{body}");
    assert!(head.contains("Retry-After: "), "{head}");
    assert_eq!(body.trim(), "too many connections from your address");
    assert_eq!(server.metric("websocket_address_limit_refusals_total{limit=\"connections_per_ip\"}"), 1.0);
    // Plain HTTP is not counted; a closed connection frees its place.
    assert_eq!(http_get(server.port, "/health").0, 200);
    drop(a);
    eventually("a place frees up", || try_upgrade(&server, "room=l").0 == 101);

    let server = Server::start(&[("UPGRADE_RATE_PER_IP", "0.5"), ("UPGRADE_BURST_PER_IP", "3")]);
    let statuses: Vec<u16> = (0..5).map(|_| try_upgrade(&server, "room=r").0).collect();
    assert_eq!(statuses, [101, 101, 101, 429, 429]);
    let (_, head, _) = upgrade_raw(&server, "room=r", "");
    assert!(head.contains("Retry-After: 2") || head.contains("Retry-After: 1"), "{head}");
    assert_eq!(server.metric("websocket_address_limit_refusals_total{limit=\"upgrade_rate\"}"), 3.0);
    assert_eq!(server.metric("websocket_http_responses_total{status=\"429\"}"), 3.0);
    assert_eq!(http_get(server.port, "/health").0, 200, "only upgrades are rate limited");
}

#[test]
fn with_auth_unset_tokens_are_ignored_and_frames_have_no_user_id() {
    let server = Server::start(&[]);
    let (mut ws, _) = join(&server, "room=p&name=ana&token=whatever");
    ws.send(Message::text(json!({"type": "chat", "username": "bob", "message": "hi"}).to_string())).unwrap();
    let v = recv_json(&mut ws);
    assert_eq!(v["username"], "bob", "without auth the frame's username is used, as before");
    assert!(v.get("userId").is_none());
    assert_eq!(refusals(&server, "missing"), 0.0);
}
