//! A TCP proxy between one server process and Redis, so that a test can
//! make the rare moment of a race happen on purpose: drop what Redis sends
//! on the server's subscription connections (as if Redis died between its
//! reply to a publish and its writes to the subscribers), cut every
//! connection, and refuse new ones for a while (one pod comes back later
//! than another). Each connection is two pump threads; all of it ends when
//! the proxy is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    /// Drop what Redis sends on connections that sent `SSUBSCRIBE`.
    mute_subscriptions: AtomicBool,
    /// Close new connections at once.
    refuse: AtomicBool,
    stop: AtomicBool,
    /// Both ends of every open connection, to cut them.
    open: Mutex<Vec<TcpStream>>,
}

/// A proxy to the Redis on `127.0.0.1:upstream`.
pub struct RedisProxy {
    pub port: u16,
    state: Arc<State>,
}

impl RedisProxy {
    pub fn start(upstream: u16) -> RedisProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State::default());
        let s = state.clone();
        std::thread::spawn(move || {
            while !s.stop.load(Ordering::Acquire) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                if s.refuse.load(Ordering::Acquire) {
                    continue; // dropped: closed at once
                }
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else { continue };
                let mut open = s.open.lock().unwrap();
                open.extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                drop(open);
                let subscriber = Arc::new(AtomicBool::new(false));
                let (to_server, from_server) = (server.try_clone().unwrap(), server);
                let (from_client, to_client) = (client.try_clone().unwrap(), client);
                let sub = subscriber.clone();
                std::thread::spawn(move || {
                    pump(from_client, to_server, |chunk| {
                        if chunk.windows(10).any(|w| w.eq_ignore_ascii_case(b"SSUBSCRIBE")) {
                            sub.store(true, Ordering::Release);
                        }
                        true
                    })
                });
                let s2 = s.clone();
                std::thread::spawn(move || {
                    pump(from_server, to_client, |_| {
                        !(subscriber.load(Ordering::Acquire) && s2.mute_subscriptions.load(Ordering::Acquire))
                    })
                });
            }
        });
        RedisProxy { port, state }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// From now on, what Redis sends to subscription connections is dropped.
    pub fn mute_subscriptions(&self, on: bool) {
        self.state.mute_subscriptions.store(on, Ordering::Release);
    }

    /// New connections are closed at once while `on`.
    pub fn refuse_new(&self, on: bool) {
        self.state.refuse.store(on, Ordering::Release);
    }

    /// Closes every open connection (both ends).
    pub fn cut(&self) {
        for s in self.state.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for RedisProxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::Release);
        self.cut();
    }
}

/// Copies `from` to `to` until either ends; a chunk `pass` refuses is dropped.
fn pump(mut from: TcpStream, mut to: TcpStream, mut pass: impl FnMut(&[u8]) -> bool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if pass(&buf[..n]) && to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
