//! One simulated client: its state machine (idle → connecting → upgrading
//! → open → closing → backoff → connecting …, ending in done or failed),
//! the reconnect policy (exponential backoff with jitter, a retry limit,
//! `Retry-After`), what it is assigned (URL, room, source address,
//! whether it sends) and its small always-present state. The socket and
//! its buffers live in the driver's slab only while a connection exists.

use std::time::Duration;

use websocket_server::backoff::{self, Spread};

use crate::checker::{Outbox, Track};
use crate::config::Config;

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started yet (waiting for its slot in the ramp).
    Idle,
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent, waiting for the 101.
    Upgrading,
    /// WebSocket open.
    Open,
    /// A close frame was sent (ours or the reply to the server's); waiting
    /// for the server to end the TCP connection.
    Closing,
    /// Waiting to reconnect.
    Backoff,
    /// Gave up after too many consecutive failures.
    Failed,
    /// Closed at the end of the run.
    Done,
}

/// Which of a client's deadlines is pending (one at a time).
pub const NO_DEADLINE: u64 = u64::MAX;

/// A client's always-present state: about 150 bytes.
#[derive(Debug, Clone)]
pub struct Client {
    /// Lifecycle state.
    pub state: State,
    /// The slab key of its socket while one exists.
    pub link: Option<u32>,
    /// When it next needs attention (µs from the start), or [`NO_DEADLINE`]:
    /// connect / upgrade / close timeout, next send, or end of backoff.
    pub deadline: u64,
    /// Consecutive failed attempts (reset by a join frame).
    pub failures: u32,
    /// Connects started (the attempt number keys the handshake).
    pub attempts: u32,
    /// How many URLs past its assigned one it has moved after failed
    /// attempts (failover when several URLs are given).
    pub hop: u16,
    /// Whether it ever got a 101.
    pub ever_opened: bool,
    /// Whether the current connection got its join (`system`) frame.
    pub joined: bool,
    /// Whether the server announced its shutdown or closed: stop sending.
    pub draining: bool,
    /// Whether a close frame was received on the current connection.
    pub close_received: bool,
    /// The pod of the current connection (index into the driver's pod
    /// names), `u16::MAX` when unknown.
    pub pod: u16,
    /// Error frames received (answers to its messages, presumably).
    pub rejected: u32,
    /// Its room's sequence as it saw it.
    pub track: Track,
    /// Its messages nobody has seen yet.
    pub outbox: Outbox,
}

impl Default for Client {
    fn default() -> Client {
        Client {
            state: State::Idle,
            link: None,
            deadline: NO_DEADLINE,
            failures: 0,
            attempts: 0,
            hop: 0,
            ever_opened: false,
            joined: false,
            draining: false,
            close_received: false,
            pod: u16::MAX,
            rejected: 0,
            track: Track::default(),
            outbox: Outbox::default(),
        }
    }
}

impl Client {
    /// Whether it is open and joined (counted as active).
    pub fn active(&self) -> bool {
        self.state == State::Open && self.joined
    }

    /// The URL index of the current attempt: the assigned one, moved on by
    /// one for every failed attempt so far.
    pub fn url(&self, assigned: usize, urls: usize) -> usize {
        (assigned + self.hop as usize) % urls.max(1)
    }

    /// Resets the per-connection flags for a new attempt.
    pub fn begin_attempt(&mut self) {
        self.attempts += 1;
        self.joined = false;
        self.draining = false;
        self.close_received = false;
        self.pod = u16::MAX;
    }
}

/// What a connection is assigned, fixed for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assignment {
    /// Index into the URLs.
    pub url: usize,
    /// Index of the room.
    pub room: usize,
    /// Index into the source addresses (0 when there are none).
    pub bind: usize,
    /// Whether it sends messages.
    pub sender: bool,
}

/// The assignment of connection `i`: rooms round-robin; URLs round-robin
/// with an offset per lap of the rooms, so that every room is spread over
/// every URL; source addresses round-robin; the first `senders` send (so
/// senders cover the rooms evenly).
pub fn assign(i: usize, cfg: &Config) -> Assignment {
    let rooms = cfg.rooms.max(1);
    Assignment {
        url: (i % rooms + i / rooms) % cfg.urls.len().max(1),
        room: i % rooms,
        bind: if cfg.binds.is_empty() { 0 } else { i % cfg.binds.len() },
        sender: i < cfg.senders,
    }
}

/// Reconnect policy: 100 ms doubling per consecutive failure up to 5 s,
/// times a jitter factor in [0.5, 1.5). A `Retry-After` from the server
/// replaces the base delay (times [1, 1.5) so that clients told the same
/// time do not return together).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First delay.
    pub min: Duration,
    /// Largest base delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { min: Duration::from_millis(100), max: Duration::from_secs(5) }
    }
}

impl Backoff {
    /// The delay before the next attempt after `failures` consecutive
    /// failures (0 after a connection that was open), with `unit` a random
    /// number in [0, 1).
    pub fn delay(&self, failures: u32, retry_after: Option<Duration>, unit: f64) -> Duration {
        if let Some(ra) = retry_after {
            return ra.mul_f64(1.0 + 0.5 * unit);
        }
        backoff::delay(self.min, self.max, failures, Spread::Around, unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_args as cfg;

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, None, 0.5), Duration::from_millis(100));
        assert_eq!(b.delay(1, None, 0.5), Duration::from_millis(200));
        assert_eq!(b.delay(3, None, 0.5), Duration::from_millis(800));
        assert_eq!(b.delay(6, None, 0.5), Duration::from_secs(5));
        assert_eq!(b.delay(1000, None, 0.5), Duration::from_secs(5));
        assert_eq!(b.delay(0, None, 0.0), Duration::from_millis(50));
        assert!(b.delay(0, None, 0.999_999) < Duration::from_millis(150));
        assert_eq!(b.delay(9, None, 0.0), Duration::from_millis(2500));
    }

    #[test]
    fn retry_after_is_honoured_with_spread() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, Some(Duration::from_secs(2)), 0.0), Duration::from_secs(2));
        assert_eq!(b.delay(5, Some(Duration::from_secs(2)), 0.5), Duration::from_millis(2500));
    }

    #[test]
    fn rooms_are_spread_over_urls_and_senders_over_rooms() {
        let c = cfg(&["--connections", "12", "--rooms", "3", "--url", "ws://a:1,ws://b:2", "--senders", "3"]);
        let a: Vec<Assignment> = (0..12).map(|i| assign(i, &c)).collect();
        // Every room has connections on both URLs.
        for room in 0..3 {
            let urls: std::collections::BTreeSet<usize> = a.iter().filter(|x| x.room == room).map(|x| x.url).collect();
            assert_eq!(urls.len(), 2, "room {room}");
        }
        // URLs get equal shares.
        assert_eq!(a.iter().filter(|x| x.url == 0).count(), 6);
        // The three senders are in three different rooms.
        let sender_rooms: Vec<usize> = a.iter().filter(|x| x.sender).map(|x| x.room).collect();
        assert_eq!(sender_rooms, [0, 1, 2]);
    }

    #[test]
    fn one_room_is_plain_round_robin_over_urls_and_binds() {
        let c = cfg(&["--connections", "4", "--url", "ws://a:1,ws://b:2", "--bind", "127.0.0.1-127.0.0.3"]);
        let a: Vec<(usize, usize)> = (0..4).map(|i| (assign(i, &c).url, assign(i, &c).bind)).collect();
        assert_eq!(a, [(0, 0), (1, 1), (0, 2), (1, 0)]);
        let c = cfg(&["--connections", "4", "--url", "ws://a:1,ws://b:2", "--rooms", "1000"]);
        assert_eq!((0..4).map(|i| assign(i, &c).url).collect::<Vec<_>>(), [0, 1, 0, 1]);
    }

    #[test]
    fn client_state_stays_small() {
        assert!(std::mem::size_of::<Client>() <= 192, "{}", std::mem::size_of::<Client>());
        let mut c = Client::default();
        assert!(!c.active());
        c.state = State::Open;
        c.joined = true;
        assert!(c.active());
        c.begin_attempt();
        assert!(!c.joined && c.attempts == 1 && c.pod == u16::MAX);
        assert_eq!((c.url(1, 3), c.url(0, 1)), (1, 0));
        c.hop = 4;
        assert_eq!((c.url(1, 3), c.url(0, 1)), (2, 0));
    }
}
