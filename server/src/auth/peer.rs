//! Per-address limits: open WebSockets per client address
//! (`MAX_CONNECTIONS_PER_IP`) and an upgrade rate per address
//! (`UPGRADE_RATE_PER_IP` tokens a second, bucket of `UPGRADE_BURST_PER_IP`).
//! Both are off by default; past either, an upgrade is answered 429 with
//! `Retry-After`.
//!
//! The address is the socket's peer. IPv6 addresses count per /64 (one
//! host usually holds a whole /64, so a per-/128 limit would not limit it);
//! IPv4-mapped IPv6 counts as IPv4. Behind a proxy or a load balancer that
//! does not keep the client's address, every client has the proxy's
//! address: the limits then apply to the proxy as a whole, so leave them
//! unset there (or set them far above one proxy's share). Kubernetes'
//! `externalTrafficPolicy: Local` keeps it (docs/kubernetes.md).
//!
//! One table per process, shared by the workers behind a mutex each: an
//! upgrade takes each lock once, a closing WebSocket the count lock once;
//! nothing is locked per message. Addresses leave the count table when
//! their last connection closes, and idle full buckets are pruned once a
//! minute, so the tables hold only active addresses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often full buckets are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// `Retry-After` for a client at its connection limit: a guess, since the
/// count falls only when one of its connections closes.
const CONN_RETRY_SECS: u64 = 10;

/// The configured limits.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PeerLimits {
    /// Open WebSockets per address.
    pub max_connections: Option<u32>,
    /// Upgrades per second per address (bucket refill).
    pub upgrade_rate: Option<f64>,
    /// Upgrade bucket size.
    pub upgrade_burst: u32,
}

crate::metrics::label_enum! {
    /// Which limit refused an upgrade: the `limit` label of
    /// `websocket_address_limit_refusals_total` ([`LIMITS`]).
    pub enum Limit, labels LIMITS {
        /// `MAX_CONNECTIONS_PER_IP`.
        Connections = "connections_per_ip",
        /// `UPGRADE_RATE_PER_IP`.
        UpgradeRate = "upgrade_rate",
    }
}

/// A refused upgrade: which limit, and when to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// The limit.
    pub limit: Limit,
    /// Seconds for `Retry-After`.
    pub retry_after: u64,
}

impl Refused {
    /// The 429 answer.
    pub fn response(&self) -> crate::http::response::Response {
        let text = match self.limit {
            Limit::Connections => "too many connections from your address",
            Limit::UpgradeRate => "too many connection attempts from your address",
        };
        crate::http::response::Response::text(429, text).header("Retry-After", self.retry_after.to_string())
    }
}

/// For the start-up line.
pub fn describe(l: &PeerLimits) -> String {
    let conns = l.max_connections.map_or("off".to_string(), |n| n.to_string());
    let rate = l.upgrade_rate.map_or("off".to_string(), |r| format!("{r}/s burst {}", l.upgrade_burst));
    format!("connections:{conns},upgrades:{rate}")
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The process's per-address state.
#[derive(Debug, Default)]
pub struct PeerTable {
    limits: PeerLimits,
    counts: Mutex<HashMap<IpAddr, u32>>,
    buckets: Mutex<(HashMap<IpAddr, Bucket>, Option<Instant>)>,
}

/// The address limits apply to: IPv4 as is, IPv6 by its /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
    }
}

impl PeerTable {
    /// A table enforcing `limits`.
    pub fn new(limits: PeerLimits) -> PeerTable {
        PeerTable { limits, ..PeerTable::default() }
    }

    /// Whether the upgrade rate is limited.
    pub fn rate_limited(&self) -> bool {
        self.limits.upgrade_rate.is_some()
    }

    /// Whether open connections are counted.
    pub fn counts_connections(&self) -> bool {
        self.limits.max_connections.is_some()
    }

    /// Takes one upgrade from `ip`'s bucket (call for every upgrade request).
    pub fn take_upgrade(&self, ip: IpAddr, now: Instant) -> Result<(), Refused> {
        let Some(rate) = self.limits.upgrade_rate else { return Ok(()) };
        let burst = f64::from(self.limits.upgrade_burst.max(1));
        let mut guard = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let (buckets, pruned) = &mut *guard;
        if pruned.is_none_or(|t| now.duration_since(t) >= PRUNE_EVERY) {
            // A bucket that has refilled is the same as no bucket.
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
            *pruned = Some(now);
        }
        let b = buckets.entry(limit_key(ip)).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64;
            Err(Refused { limit: Limit::UpgradeRate, retry_after: wait })
        }
    }

    /// Counts a WebSocket from `ip` if it is under its limit; the caller
    /// must [`release`](Self::release) it when the connection goes.
    pub fn open(&self, ip: IpAddr) -> Result<(), Refused> {
        let Some(max) = self.limits.max_connections else { return Ok(()) };
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(limit_key(ip)).or_insert(0);
        if *n >= max {
            return Err(Refused { limit: Limit::Connections, retry_after: CONN_RETRY_SECS });
        }
        *n += 1;
        Ok(())
    }

    /// Returns a connection counted by [`open`](Self::open).
    pub fn release(&self, ip: IpAddr) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let key = limit_key(ip);
        if let Some(n) = counts.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&key);
            }
        }
    }

    /// Addresses with open counted connections (for tests and metrics).
    pub fn addresses(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn counts_per_address_and_forgets_idle_ones() {
        let t = PeerTable::new(PeerLimits { max_connections: Some(2), ..PeerLimits::default() });
        assert!(t.open(ip("10.0.0.1")).is_ok() && t.open(ip("10.0.0.1")).is_ok());
        assert_eq!(t.open(ip("10.0.0.1")).unwrap_err().limit, Limit::Connections);
        assert!(t.open(ip("10.0.0.2")).is_ok(), "another address has its own count");
        t.release(ip("10.0.0.1"));
        assert!(t.open(ip("::ffff:10.0.0.1")).is_ok(), "IPv4-mapped counts as IPv4");
        for _ in 0..2 {
            t.release(ip("10.0.0.1"));
        }
        t.release(ip("10.0.0.2"));
        assert_eq!(t.addresses(), 0);
    }

    #[test]
    fn ipv6_counts_per_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        let t = PeerTable::new(PeerLimits { max_connections: Some(1), ..PeerLimits::default() });
        assert!(t.open(ip("2001:db8:1:2::1")).is_ok());
        assert!(t.open(ip("2001:db8:1:2::2")).is_err(), "same /64");
        assert!(t.open(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn upgrade_bucket_refills_at_the_rate() {
        let t = PeerTable::new(PeerLimits { upgrade_rate: Some(2.0), upgrade_burst: 3, ..PeerLimits::default() });
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!((0..5).filter(|_| t.take_upgrade(a, t0).is_ok()).count(), 3);
        let refused = t.take_upgrade(a, t0).unwrap_err();
        assert_eq!((refused.limit, refused.retry_after), (Limit::UpgradeRate, 1));
        assert!(t.take_upgrade(a, t0 + Duration::from_millis(500)).is_ok(), "one token after 500 ms");
        assert!(t.take_upgrade(ip("192.0.2.2"), t0).is_ok(), "another address has its own bucket");
        // Unset: never refused.
        let off = PeerTable::new(PeerLimits::default());
        assert!((0..1000).all(|_| off.take_upgrade(a, t0).is_ok() && off.open(a).is_ok()));
    }
}
