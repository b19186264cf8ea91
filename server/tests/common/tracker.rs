//! A chat client on its own thread that behaves like a real one: it
//! resumes with `since` after any close (trying the given servers in turn)
//! and records every chat seq it is shown, so a test can check that the
//! whole run has no gap and no duplicate for it.

use super::read_frame;
use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tungstenite::Message;

/// What the client saw over its life.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Every chat seq shown, in order (history and live, across reconnects).
    pub seqs: Vec<u64>,
    /// The texts of those messages, in the same order.
    pub texts: Vec<String>,
    /// Texts this client wrote to a socket.
    pub sent: Vec<String>,
    /// Codes of the error frames received (a refused message is not delivered).
    pub refused: Vec<String>,
    /// Connections made (1 + reconnects).
    pub connections: u32,
    /// Resumes answered `recovered:false`.
    pub not_recovered: u32,
    /// Close codes received from servers.
    pub closes: Vec<u16>,
}

impl Report {
    /// The seqs, checked: consecutive from the first, no gap, no duplicate.
    pub fn assert_gapless(&self, who: &str) {
        for w in self.seqs.windows(2) {
            assert_eq!(w[1], w[0] + 1, "{who}: seq {} followed by {} (gap or duplicate): {:?}", w[0], w[1], self.seqs);
        }
        assert_eq!(self.not_recovered, 0, "{who}: a resume was not recovered");
    }
}

enum Cmd {
    Send(String),
    Finish,
}

/// A running tracked client.
pub struct Tracker {
    tx: Sender<Cmd>,
    handle: JoinHandle<Report>,
    seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Tracker {
    /// Connects to `ports[first]` in `room`; after a close it tries the
    /// ports in turn, starting with the next one.
    pub fn start(ports: Vec<u16>, first: usize, room: &str, name: &str) -> Tracker {
        let (tx, rx) = mpsc::channel();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (room, name, seen2) = (room.to_string(), name.to_string(), seen.clone());
        let handle = std::thread::spawn(move || run(ports, first, &room, &name, rx, seen2));
        let t = Tracker { tx, handle, seen };
        super::eventually("tracked client connected", || t.seen.load(std::sync::atomic::Ordering::Acquire) > 0);
        t
    }

    /// Queues a chat message.
    pub fn send(&self, text: &str) {
        let _ = self.tx.send(Cmd::Send(text.to_string()));
    }

    /// The highest seq shown so far (0: connected, nothing yet; offset by one).
    pub fn last_seq(&self) -> u64 {
        self.seen.load(std::sync::atomic::Ordering::Acquire).saturating_sub(1)
    }

    /// Stops after everything queued was sent, returns the report.
    pub fn finish(self) -> Report {
        let _ = self.tx.send(Cmd::Finish);
        self.handle.join().expect("tracker thread")
    }
}

type Ws = tungstenite::WebSocket<TcpStream>;

fn connect(port: u16, room: &str, name: &str, since: Option<u64>) -> Option<Ws> {
    let mut url = format!("ws://127.0.0.1:{port}/ws?room={room}&name={name}");
    if let Some(s) = since {
        url.push_str(&format!("&since={s}"));
    }
    let stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_millis(50))).ok()?;
    let (ws, _) = tungstenite::client(url, stream).ok()?;
    Some(ws)
}

fn run(
    ports: Vec<u16>,
    first: usize,
    room: &str,
    name: &str,
    rx: Receiver<Cmd>,
    seen: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> Report {
    let mut report = Report::default();
    let mut queue: std::collections::VecDeque<String> = Default::default();
    let mut finishing = false;
    let mut idle_since = Instant::now();
    let mut target = first;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last: Option<u64> = None;
    'connections: while Instant::now() < deadline {
        let Some(mut ws) = connect(ports[target % ports.len()], room, name, last) else {
            target += 1;
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        report.connections += 1;
        // The welcome.
        let welcome: serde_json::Value = loop {
            match read_frame(&mut ws) {
                Ok(Message::Text(t)) => break serde_json::from_str(&t).unwrap(),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > deadline {
                        return report;
                    }
                    continue;
                }
                Err(_) => {
                    target += 1;
                    continue 'connections;
                }
            }
        };
        assert_eq!(welcome["type"], "system", "{welcome}");
        if welcome["recovered"] == false {
            report.not_recovered += 1;
        }
        for m in welcome["history"].as_array().unwrap() {
            record(&mut report, &mut last, m, &seen);
        }
        if last.is_none() {
            // A fresh join: count from the room's current seq.
            last = Some(welcome["lastSeq"].as_u64().unwrap());
        }
        seen.store(last.unwrap_or(0) + 1, std::sync::atomic::Ordering::Release);
        loop {
            loop {
                match rx.try_recv() {
                    Ok(Cmd::Send(t)) => queue.push_back(t),
                    Ok(Cmd::Finish) => finishing = true,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => finishing = true,
                }
            }
            while let Some(text) = queue.front() {
                let frame = serde_json::json!({"type": "chat", "message": text}).to_string();
                if ws.send(Message::text(frame)).is_err() {
                    target += 1;
                    continue 'connections; // resent after reconnecting
                }
                report.sent.push(queue.pop_front().unwrap());
                idle_since = Instant::now();
            }
            match read_frame(&mut ws) {
                Ok(Message::Text(t)) => {
                    idle_since = Instant::now();
                    let v: serde_json::Value = serde_json::from_str(&t).unwrap();
                    match v["type"].as_str() {
                        Some("chat") => record(&mut report, &mut last, &v, &seen),
                        Some("error") => report.refused.push(v["code"].as_str().unwrap_or("").to_string()),
                        _ => {}
                    }
                }
                Ok(Message::Close(f)) => {
                    report.closes.push(f.map_or(1005, |f| u16::from(f.code)));
                    let _ = ws.flush();
                    target += 1;
                    continue 'connections;
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if finishing && queue.is_empty() && idle_since.elapsed() > Duration::from_millis(1500) {
                        let _ = ws.close(None);
                        return report;
                    }
                }
                Err(_) => {
                    target += 1;
                    continue 'connections;
                }
            }
        }
    }
    report
}

fn record(report: &mut Report, last: &mut Option<u64>, m: &serde_json::Value, seen: &std::sync::atomic::AtomicU64) {
    let seq = m["seq"].as_u64().expect("chat seq");
    report.seqs.push(seq);
    report.texts.push(m["message"].as_str().unwrap_or("").to_string());
    *last = Some(seq);
    seen.store(seq + 1, std::sync::atomic::Ordering::Release);
}
