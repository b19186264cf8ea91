//! connflood against the real websocket-server, end to end: a small run
//! must pass with every delivery accounted for; an unreachable target and a
//! usage error must give the documented exit statuses.
//!
//! The server binary is not built by this package: run
//! `cargo build -p websocket-server` first (or `cargo test --workspace`,
//! which builds it), or point `WEBSOCKET_SERVER_BIN` at one.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const CONNFLOOD: &str = env!("CARGO_BIN_EXE_connflood");

/// The server binary: `WEBSOCKET_SERVER_BIN`, else the one beside the
/// connflood binary under test (same target directory and profile), else
/// `<target>/debug/websocket-server`.
fn server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WEBSOCKET_SERVER_BIN") {
        return PathBuf::from(p);
    }
    if let Some(beside) = std::path::Path::new(CONNFLOOD).parent().map(|d| d.join("websocket-server")) {
        if beside.exists() {
            return beside;
        }
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(t) if t.is_absolute() => t,
        Some(t) => workspace.join(t),
        None => workspace.join("target"),
    };
    let bin = target.join("debug").join("websocket-server");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p websocket-server` first (or set WEBSOCKET_SERVER_BIN)",
        bin.display()
    );
    bin
}

/// A server child process, killed (by its PID) when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    fn start_with(env: &[(&str, &str)]) -> Server {
        let mut child = Command::new(server_binary())
            .envs(env.iter().copied())
            .env("PORT", "0")
            .env("BIND_ADDR", "127.0.0.1")
            .env("WORKERS", "2")
            .env("POD_NAME", "test-pod")
            .env_remove("REDIS_URL")
            .env_remove("REDIS_HOST")
            .env_remove("MONGO_URI")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start websocket-server");
        let stdout = child.stdout.take().expect("server stdout");
        let (tx, rx) = mpsc::channel();
        // Forward the log; the first line with "listening on" gives the port.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut server = Server { child, port: 0 };
        while server.port == 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let line =
                rx.recv_timeout(left).unwrap_or_else(|_| panic!("no `listening on` line from the server in 15 s"));
            if let Some(rest) = line.split("listening on ").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("");
                server.port = addr.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
                assert!(server.port != 0, "cannot read the port from {line:?}");
            }
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn json_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("connflood-{name}-{}.json", std::process::id()))
}

fn read_json(path: &PathBuf) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("read the --json report");
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).expect("the --json report parses")
}

#[test]
fn small_run_against_the_server_loses_nothing() {
    let server = Server::start();
    let json = json_path("small");
    let started = Instant::now();
    let out = Command::new(CONNFLOOD)
        .args(["--url", &format!("ws://127.0.0.1:{}", server.port)])
        .args(["--connections", "200", "--rooms", "10", "--ramp-up", "2", "--duration", "12"])
        .args(["--msg-interval", "1000", "--settle", "3", "--quiet", "--json"])
        .arg(&json)
        .env_remove("WS_URL")
        .output()
        .expect("run connflood");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "connflood failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(60), "the run did not stop by itself in time");
    let r = read_json(&json);
    let m = &r["messages"];
    let c = &r["connections"];
    assert_eq!(r["passed"], true);
    assert_eq!(c["connected"], 200);
    assert_eq!(c["active"], 200);
    assert_eq!(c["never_connected"], 0);
    assert_eq!(c["failed"], 0);
    assert_eq!(m["lost"], 0, "{text}");
    assert_eq!(m["duplicated"], 0, "{text}");
    assert_eq!(m["reordered"], 0, "{text}");
    assert_eq!(m["rejected"], 0, "{text}");
    let (sent, expected, delivered) =
        (m["sent"].as_u64().unwrap(), m["expected"].as_u64().unwrap(), m["delivered"].as_u64().unwrap());
    assert_eq!(delivered, expected, "{text}");
    assert_eq!(m["received_live"].as_u64().unwrap(), delivered, "live frames are exactly the deliveries");
    // ~200 senders, one message a second for ~14 s, 20 members per room:
    // every message reaches its room's members that had joined when it was sent.
    assert!(sent >= 200 * 12, "sent {sent}");
    assert!(expected >= sent * 20 * 9 / 10 && expected <= sent * 20, "expected {expected} for {sent} sent");
    assert_eq!(r["pods"]["current"]["test-pod"], 200);
    assert!(r["latency_ms"]["samples"].as_u64().unwrap() == delivered);
}

#[test]
fn unreachable_target_fails_quickly_with_status_1() {
    // A port that was just free: connects are refused.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let json = json_path("unreachable");
    let started = Instant::now();
    let out = Command::new(CONNFLOOD)
        .args(["--url", &format!("ws://127.0.0.1:{port}"), "--connections", "3", "--ramp-up", "0"])
        .args(["--duration", "30", "--max-retries", "2", "--quiet", "--json"])
        .arg(&json)
        .output()
        .expect("run connflood");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(started.elapsed() < Duration::from_secs(10), "gave up only after {:?}", started.elapsed());
    let r = read_json(&json);
    assert_eq!(r["passed"], false);
    assert_eq!(r["connections"]["never_connected"], 3);
    assert_eq!(r["connections"]["attempts"], 6);
    assert_eq!(r["errors_by_kind"]["refused"], 6);
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    for args in [&["--connections", "0"][..], &["--no-such-flag"], &["--url", "wss://x"], &["--msg-interval"]] {
        let out = Command::new(CONNFLOOD).args(args).output().expect("run connflood");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    let out = Command::new(CONNFLOOD).env("CONNECTIONS", "zero").output().expect("run connflood");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CONNECTIONS"));
    let out = Command::new(CONNFLOOD).arg("--help").output().expect("run connflood");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["WS_URL", "CONNECTIONS", "RAMP_UP", "DURATION", "MSG_INTERVAL", "--bind", "--json", "Exit status"] {
        assert!(help.contains(word), "{word}");
    }
}

#[test]
fn with_token_secret_every_connection_authenticates_and_resumes_at_expiry() {
    const SECRET: &str = "connflood-test-secret-of-32-bytes-or-more";
    let server = Server::start_with(&[("AUTH_JWT_SECRET", SECRET)]);
    let url = format!("ws://127.0.0.1:{}", server.port);
    let json = json_path("token");
    let out = Command::new(CONNFLOOD)
        .args(["--url", &url, "--connections", "40", "--rooms", "4", "--ramp-up", "1", "--duration", "7"])
        .args(["--msg-interval", "500", "--settle", "2", "--quiet", "--token-secret", SECRET, "--token-ttl", "3"])
        .arg("--json")
        .arg(&json)
        .env_remove("WS_URL")
        .output()
        .expect("run connflood");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "connflood failed:\n{text}");
    let r = read_json(&json);
    assert_eq!(r["passed"], true);
    assert_eq!(r["messages"]["lost"], 0, "{text}");
    assert_eq!(r["messages"]["duplicated"], 0, "{text}");
    assert!(r["close_codes"]["4001"].as_u64().unwrap_or(0) >= 40, "every connection outlived a token: {text}");

    // Without a token the same server refuses every connection.
    let out = Command::new(CONNFLOOD)
        .args(["--url", &url, "--connections", "2", "--ramp-up", "0.1", "--duration", "1", "--settle", "0.5"])
        .args(["--max-retries", "2", "--quiet"])
        .env_remove("WS_URL")
        .env_remove("TOKEN_SECRET")
        .output()
        .expect("run connflood");
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));

    // mint-token prints a token the server takes (here for /history, in the header).
    let out = Command::new(CONNFLOOD)
        .args(["mint-token", "--secret", SECRET, "--sub", "manual", "--ttl", "60", "--rooms", "cf-*"])
        .output()
        .expect("run connflood mint-token");
    assert_eq!(out.status.code(), Some(0));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(token.split('.').count(), 3, "{token}");
    let status = |room: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "GET /history?room={room} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
        let mut resp = String::new();
        let _ = std::io::Read::read_to_string(&mut s, &mut resp);
        resp.split_whitespace().nth(1).unwrap_or("").to_string()
    };
    assert_eq!(status("cf-0"), "200");
    assert_eq!(status("other"), "403");
}

/// One short run with or without `--deflate`; returns its JSON report.
fn deflate_run(server: &Server, deflate: bool) -> serde_json::Value {
    let json = json_path(if deflate { "deflate" } else { "plain" });
    let mut cmd = Command::new(CONNFLOOD);
    cmd.args(["--url", &format!("ws://127.0.0.1:{}", server.port)])
        .args(["--connections", "20", "--rooms", "2", "--ramp-up", "1", "--duration", "3"])
        .args(["--msg-interval", "500", "--payload", "120", "--settle", "2", "--quiet", "--json"])
        .arg(&json)
        .env_remove("WS_URL");
    if deflate {
        cmd.arg("--deflate");
    }
    let out = cmd.output().expect("run connflood");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "connflood failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    read_json(&json)
}

#[test]
fn deflate_run_negotiates_loses_nothing_and_puts_fewer_bytes_on_the_wire() {
    let server = Server::start();
    let plain = deflate_run(&server, false);
    let zipped = deflate_run(&server, true);
    assert_eq!(plain["connections"]["deflate_negotiated"], 0);
    assert_eq!(plain["messages"]["compressed_deliveries"], 0);
    assert_eq!(zipped["connections"]["deflate_negotiated"], 20);
    let m = &zipped["messages"];
    assert_eq!((m["lost"].as_u64(), m["duplicated"].as_u64()), (Some(0), Some(0)));
    assert!(m["delivered"].as_u64().unwrap() > 0);
    assert_eq!(m["compressed_deliveries"], m["received_live"], "every chat frame came compressed");
    let (p, z) = (
        plain["messages"]["wire_bytes_per_delivery"].as_f64().unwrap(),
        m["wire_bytes_per_delivery"].as_f64().unwrap(),
    );
    assert!(p > 0.0 && z > 0.0 && z < p * 0.9, "wire bytes per delivery: plain {p}, deflate {z}");
}

/// `--stop-file`: sending stops once the file appears, long before
/// `--duration`, and the run is judged as usual (settle, nothing lost).
#[test]
fn stop_file_ends_the_sending_time_early() {
    let server = Server::start();
    let json = json_path("stop-file");
    let stop = std::env::temp_dir().join(format!("connflood-stop-{}", std::process::id()));
    let _ = std::fs::remove_file(&stop);
    let started = Instant::now();
    let child = Command::new(CONNFLOOD)
        .args(["--url", &format!("ws://127.0.0.1:{}", server.port)])
        .args(["--connections", "20", "--rooms", "2", "--ramp-up", "1", "--duration", "120"])
        .args(["--msg-interval", "200", "--settle", "2", "--quiet", "--json"])
        .arg(&json)
        .arg("--stop-file")
        .arg(&stop)
        .env_remove("WS_URL")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run connflood");
    std::thread::sleep(Duration::from_secs(3));
    std::fs::write(&stop, b"").expect("create the stop file");
    let out = child.wait_with_output().expect("connflood ends");
    let _ = std::fs::remove_file(&stop);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "connflood failed:\n{text}");
    assert!(started.elapsed() < Duration::from_secs(30), "ran {:?}: the stop file was not seen", started.elapsed());
    let r = read_json(&json);
    let window = r["timing"]["send_window_secs"].as_f64().unwrap();
    assert!((2.5..10.0).contains(&window), "sending stopped at {window} s, not when the file appeared (3 s)");
    let judged = r["timing"]["judged_at_secs"].as_f64().unwrap();
    assert!(judged >= window + 1.9, "judged at {judged} s: the settle after {window} s was skipped");
    let m = &r["messages"];
    assert!(m["sent"].as_u64().unwrap() > 100, "{text}");
    assert_eq!((m["lost"].as_u64(), m["duplicated"].as_u64()), (Some(0), Some(0)), "{text}");
    assert_eq!(m["delivered"], m["expected"], "{text}");
}
