//! Test harness: the real `websocket-server` binary on a free loopback
//! port, and real clients (tungstenite's blocking client, raw TCP for
//! HTTP). Every wait is bounded; servers are killed when dropped.

#![allow(dead_code)]

pub mod proxy;
pub mod tracker;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

/// How long any single wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A running server process.
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// Every line the server logged so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the binary with `env` (on 127.0.0.1, a free port unless PORT is given).
    pub fn start(env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_websocket-server"));
        cmd.env_clear()
            .env("PORT", "0")
            .env("BIND_ADDR", "127.0.0.1")
            .env("POD_NAME", "test-0")
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start websocket-server");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let port = rest.split_whitespace().next().and_then(|a| a.rsplit(':').next()?.parse::<u16>().ok());
                    let _ = port_tx.send(port);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(format!("stderr: {line}"));
            }
        });
        let port = match port_rx.recv_timeout(WAIT) {
            Ok(Some(p)) => p,
            _ => {
                let _ = child.kill();
                panic!("server did not start; log: {:?}", log.lock().unwrap());
            }
        };
        Server { child, port, log }
    }

    /// `ws://127.0.0.1:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// Sends a signal to the process.
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args(["-s", sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill -s {sig} failed");
    }

    /// Waits for the process to exit; returns its status code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The admin port (`ADMIN_PORT`, given as 0 for a free one), from the
    /// start-up line "... on admin port 127.0.0.1:N; ..." (the reader thread
    /// may record that line just after `start` has returned: wait for it).
    pub fn admin_port(&self) -> u16 {
        let start = Instant::now();
        loop {
            let found =
                self.log.lock().unwrap().iter().find_map(|l| {
                    l.split("on admin port ").nth(1)?.split(';').next()?.rsplit(':').next()?.parse().ok()
                });
            match found {
                Some(port) => return port,
                None if start.elapsed() < WAIT => std::thread::sleep(Duration::from_millis(10)),
                None => panic!("no admin port in the log: {:?}", self.log.lock().unwrap()),
            }
        }
    }

    /// Whether a logged line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The value of an unlabelled metric (or a labelled one, `name{label="v"}`).
    pub fn metric(&self, name: &str) -> f64 {
        let (_, _, body) = http_get(self.port, "/metrics");
        let prefix = format!("{name} ");
        body.lines()
            .find_map(|l| l.strip_prefix(&prefix).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("metric {name} not found"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw HTTP/1.1 GET; returns (status, head, body).
pub fn http_get(port: u16, path: &str) -> (u16, String, String) {
    http_raw(port, &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"))
}

/// Sends `request` bytes and reads the response until the server closes.
pub fn http_raw(port: u16, request: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&String::from_utf8_lossy(&raw))
}

/// Splits a response into (status, head, body).
pub fn parse_response(text: &str) -> (u16, String, String) {
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

pub type Ws = WebSocket<MaybeTlsStream<TcpStream>>;

/// Connects a WebSocket client to `path` (e.g. `/ws?room=a`).
pub fn connect(server: &Server, path: &str) -> Ws {
    let (ws, resp) = tungstenite::connect(server.url(path)).expect("websocket connect");
    assert_eq!(resp.status(), 101);
    if let MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(WAIT)).unwrap();
    }
    ws
}

/// Connects a chat client and returns it with its welcome frame.
pub fn join(server: &Server, query: &str) -> (Ws, Value) {
    let mut ws = connect(server, &format!("/ws?{query}"));
    let welcome = recv_json(&mut ws);
    assert_eq!(welcome["type"], "system", "first frame is the welcome: {welcome}");
    (ws, welcome)
}

/// The next frame, like `read_frame(&mut ws)`, but a read interrupted by a signal
/// (`EINTR`: a blocking read with a timeout is not restarted after the
/// process was stopped and continued, e.g. by a freeze of the machine) is
/// read again instead of failing the test.
pub fn read_frame<S: Read + Write>(ws: &mut WebSocket<S>) -> tungstenite::Result<Message> {
    loop {
        match ws.read() {
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The next text frame, as JSON (pings are answered by tungstenite).
pub fn recv_json(ws: &mut Ws) -> Value {
    loop {
        match read_frame(ws).expect("read a frame") {
            Message::Text(t) => return serde_json::from_str(&t).expect("JSON text"),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Sends a chat message.
pub fn send_chat(ws: &mut Ws, message: &str) {
    let frame = serde_json::json!({"type": "chat", "message": message}).to_string();
    ws.send(Message::text(frame)).expect("send");
}

/// Sends a chat message with the client's own `clientId`.
pub fn send_chat_with_id(ws: &mut Ws, message: &str, client_id: &str) {
    let frame = serde_json::json!({"type": "chat", "message": message, "clientId": client_id}).to_string();
    ws.send(Message::text(frame)).expect("send");
}

/// Reads chat frames until `n` have arrived; returns their seqs and texts.
pub fn recv_chats(ws: &mut Ws, n: usize) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    while out.len() < n {
        let v = recv_json(ws);
        assert_eq!(v["type"], "chat", "expected a chat frame: {v}");
        out.push((v["seq"].as_u64().unwrap(), v["message"].as_str().unwrap().to_string()));
    }
    out
}

/// Reads until the server's close frame; returns its code.
pub fn recv_close(ws: &mut Ws) -> u16 {
    let start = Instant::now();
    while start.elapsed() < WAIT {
        match read_frame(ws) {
            Ok(Message::Close(Some(f))) => return f.code.into(),
            Ok(Message::Close(None)) => return 1005,
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
    panic!("no close frame in time")
}

/// Polls `f` until it is true or the wait runs out.
pub fn eventually(what: &str, f: impl FnMut() -> bool) {
    eventually_within(WAIT, what, f);
}

/// [`eventually`] with its own bound.
pub fn eventually_within(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what} ({limit:?})");
}

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts TCP connections on `port`.
/// Waits for a helper process to listen: up to `STARTUP_WAIT`, longer than
/// `WAIT` because a Python server's start (nx-27017 imports its modules) is
/// slow on a loaded machine, where several tests start one at once.
fn wait_listening(port: u16, what: &str) {
    eventually_within(STARTUP_WAIT, &format!("{what} listening on {port}"), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// How long a helper process (redis-server, nx-27017) may take to listen.
pub const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// A real `redis-server` (Debian's package) on a free port, without persistence.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
}

impl Redis {
    pub fn start() -> Redis {
        let mut r = Redis { child: None, port: free_port() };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string());
        let child = Command::new(&bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} ({e}): run tools/test.sh, which installs redis-server"));
        self.child = Some(child);
        wait_listening(self.port, "redis-server");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills it (all data is lost, as in a crash of a Redis without persistence).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A real MongoDB wire-protocol server (nx-27017, on SQLite) on a free
/// port, with its data in a file that survives a stop and start.
pub struct MongoWire {
    child: Option<Child>,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl MongoWire {
    pub fn start() -> MongoWire {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("ws-test-mongo-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut m = MongoWire { child: None, port, dir };
        m.spawn();
        m
    }

    fn binary() -> String {
        if let Ok(bin) = std::env::var("NX27017") {
            return bin;
        }
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv-test/bin/nx-27017");
        if std::path::Path::new(venv).exists() {
            return venv.to_string();
        }
        "nx-27017".to_string()
    }

    fn spawn(&mut self) {
        let bin = Self::binary();
        let d = &self.dir;
        let child = Command::new(&bin)
            .args(["--host", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("--db")
            .arg(d.join("chat.db"))
            .arg("--log-file")
            .arg(d.join("nx.log"))
            .arg("--pid-file")
            .arg(d.join("nx.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} ({e}): run tools/test.sh, which installs nx-27017"));
        self.child = Some(child);
        wait_listening(self.port, "nx-27017");
    }

    pub fn uri(&self) -> String {
        format!("mongodb://127.0.0.1:{}/chat", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn start_again(&mut self) {
        self.spawn();
    }

    /// Every stored (room, seq), from the `messages` collection.
    pub fn stored(&self) -> Vec<(String, u64)> {
        let client = mongodb::sync::Client::with_uri_str(self.uri()).unwrap();
        let coll = client.database("chat").collection::<mongodb::bson::Document>("messages");
        let mut out: Vec<(String, u64)> = coll
            .find(mongodb::bson::doc! {})
            .run()
            .unwrap()
            .map(|d| {
                let d = d.unwrap();
                let seq = d.get_i64("seq").or_else(|_| d.get_i32("seq").map(i64::from)).unwrap();
                (d.get_str("room").unwrap().to_string(), seq as u64)
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for MongoWire {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A chat message as the publisher hands it to the publish script.
pub fn chat_message(room: &str, id: &str, client_id: Option<&str>) -> websocket_server::chat::protocol::ChatMessage {
    websocket_server::chat::protocol::ChatMessage {
        room: room.into(),
        seq: 0,
        id: id.into(),
        username: "u".into(),
        message: format!("text of {id}"),
        pod_name: "p".into(),
        timestamp_ms: 1,
        client_id: client_id.map(str::to_string),
        user_id: None,
    }
}

/// A room's part of a publish script call: name, floor, messages with
/// their in-doubt flag.
pub type RoomPart<'a> = (&'a str, u64, Vec<(websocket_server::chat::protocol::ChatMessage, bool)>);

/// One publish script call as the publisher makes it (ring 5): `rooms` in
/// order, routed by the first room's counter; `check` (cluster mode)
/// probes each room's keys before writing it.
pub fn publish_call(con: &mut redis::Connection, check: bool, rooms: &[RoomPart<'_>]) -> Vec<i64> {
    use websocket_server::replica::{publish_call, RoomCall, PUBLISH_SCRIPT};
    let calls: Vec<RoomCall<'_>> = rooms
        .iter()
        .map(|(room, floor, msgs)| RoomCall {
            room,
            floor: *floor,
            messages: msgs.iter().map(|(m, d)| (m, *d)).collect(),
        })
        .collect();
    let (route, args) = publish_call(5, check, &calls);
    redis::Script::new(PUBLISH_SCRIPT).key(route).arg(args).invoke(con).expect("script runs")
}
