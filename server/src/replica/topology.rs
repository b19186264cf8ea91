//! Topology: which Redis node owns a room's keys and shard channel.
//!
//! One code path for both deployments: a standalone Redis (`REDIS_URL`) is
//! a cluster of one node owning all 16384 slots; `REDIS_CLUSTER_NODES`
//! names seed nodes, and the slot map comes from `CLUSTER SLOTS` on the
//! first seed (or known node) that answers. Every thread that talks to
//! Redis shares one [`Topology`] and asks it for a slot's node; a thread
//! that meets `MOVED`, a failover or a lost connection calls
//! [`Topology::refresh`], which is rate-limited so a storm of errors costs
//! one `CLUSTER SLOTS`.
//!
//! A slot is computed as Redis Cluster does: CRC16-XMODEM of the key's hash
//! tag (the part between the first `{` and the next `}`, when non-empty),
//! modulo 16384. A room's keys and its channel share the tag `{ROOM}`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// Slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// Least time between two slot-map refreshes.
const REFRESH_MIN: Duration = Duration::from_millis(200);
/// Connect and read timeout of a topology query.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// A message's hold for a standalone Redis: a restart in Kubernetes takes a
/// few seconds.
pub const STANDALONE_HOLD: Duration = Duration::from_secs(3);
/// Redis's own default `cluster-node-timeout`, assumed when the cluster's
/// cannot be read (`CONFIG` renamed, or the cluster down at start-up).
const DEFAULT_NODE_TIMEOUT_MS: u64 = 15_000;

/// CRC16-XMODEM (polynomial 0x1021, initial 0), as Redis Cluster uses.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
        }
    }
    crc
}

/// The cluster slot of `key` (its hash tag's, when it has one).
pub fn slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| key[open + 1..].iter().position(|&b| b == b'}').map(|len| &key[open + 1..open + 1 + len]))
        .filter(|tag| !tag.is_empty());
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

/// The slot of a room's keys and channel.
pub fn room_slot(room: &str) -> u16 {
    crc16(room.as_bytes()) % SLOTS as u16
}

/// A Redis node's address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Node {
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Credentials and database shared by every node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Auth {
    /// ACL user, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// Database number (standalone only; a cluster has only 0).
    pub db: i64,
}

/// Parses `redis://[[user]:password@]host[:port][/db]`.
pub fn parse_url(url: &str) -> Result<(Node, Auth), String> {
    let rest = url.strip_prefix("redis://").ok_or_else(|| format!("{url:?} does not start with redis://"))?;
    let (creds, rest) = match rest.rsplit_once('@') {
        Some((c, r)) => (Some(c), r),
        None => (None, rest),
    };
    let (hostport, db) = match rest.split_once('/') {
        Some((h, d)) if !d.is_empty() => (h, d.parse::<i64>().map_err(|_| format!("bad database number {d:?}"))?),
        Some((h, _)) => (h, 0),
        None => (rest, 0),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad port {p:?}"))?),
        None => (hostport, 6379),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{url:?} has no host"));
    }
    let (username, password) = match creds {
        None => (None, None),
        Some(c) => match c.split_once(':') {
            Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), Some(p.to_string())),
            None => (Some(c.to_string()), None),
        },
    };
    Ok((Node { host: host.to_string(), port }, Auth { username, password, db }))
}

/// The slot map: slot → index into `nodes` (the masters).
#[derive(Debug, Clone)]
struct SlotMap {
    nodes: Vec<Node>,
    owner: Vec<u16>,
}

impl SlotMap {
    fn single(node: Node) -> SlotMap {
        SlotMap { nodes: vec![node], owner: vec![0; SLOTS] }
    }
}

/// Where a room's keys live; shared by every Redis thread of the process.
#[derive(Debug)]
pub struct Topology {
    cluster: bool,
    seeds: Vec<Node>,
    auth: Auth,
    map: RwLock<SlotMap>,
    last_refresh: Mutex<Option<Instant>>,
    /// Bumped each time the slot map changes.
    version: AtomicU64,
    /// The node that answered the last `CLUSTER SLOTS`: asked first next
    /// time, so a refresh during a failover does not wait on the dead one.
    answered: Mutex<Option<Node>>,
    /// The cluster's `cluster-node-timeout` in ms, once read (0: not yet).
    node_timeout_ms: AtomicU64,
}

/// Why a cluster topology could not be read.
#[derive(Debug)]
pub enum DiscoverError {
    /// A node answered that it is not a cluster node.
    NotACluster(String),
    /// No seed could be reached (a cluster that is down: retried later).
    Unreachable(String),
}

impl Topology {
    /// A standalone Redis at `url`: one node owning every slot.
    pub fn standalone(url: &str) -> Result<Topology, String> {
        let (node, auth) = parse_url(url)?;
        Ok(Topology {
            cluster: false,
            seeds: vec![node.clone()],
            auth,
            map: RwLock::new(SlotMap::single(node)),
            last_refresh: Mutex::new(None),
            version: AtomicU64::new(0),
            answered: Mutex::new(None),
            node_timeout_ms: AtomicU64::new(0),
        })
    }

    /// A Redis Cluster reached through `seeds` (comma-separated URLs);
    /// `password` (REDIS_PASSWORD) applies where a URL has none. Reads the
    /// slot map now: a seed that answers but is no cluster node is an
    /// error; a cluster that cannot be reached is not (it is retried).
    pub fn cluster(seeds: &str, password: Option<&str>) -> Result<Topology, String> {
        let mut nodes = Vec::new();
        let mut auth = Auth::default();
        for url in seeds.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (node, a) = parse_url(url)?;
            if a.db != 0 {
                return Err(format!("{url:?}: a cluster has only database 0"));
            }
            if a.password.is_some() || a.username.is_some() {
                auth = a;
            }
            nodes.push(node);
        }
        if nodes.is_empty() {
            return Err("no seed node".into());
        }
        if auth.password.is_none() {
            auth.password = password.map(str::to_string);
        }
        let first = nodes[0].clone();
        let topo = Topology {
            cluster: true,
            seeds: nodes,
            auth,
            map: RwLock::new(SlotMap::single(first)),
            last_refresh: Mutex::new(None),
            version: AtomicU64::new(0),
            answered: Mutex::new(None),
            node_timeout_ms: AtomicU64::new(0),
        };
        match topo.discover() {
            Ok(map) => *topo.map.write().unwrap_or_else(|e| e.into_inner()) = map,
            Err(DiscoverError::NotACluster(e)) => return Err(e),
            Err(DiscoverError::Unreachable(e)) => {
                log::warn!("Redis Cluster not reachable at start-up ({e}); retrying while serving");
            }
        }
        Ok(topo)
    }

    /// How long a message may wait for the node of its room (a restart, a
    /// failover) before its sender is refused: `STANDALONE_HOLD` for one
    /// Redis; on a cluster, what a failover takes at most — a master is
    /// flagged failing after `cluster-node-timeout`, the majority agrees
    /// within about as long again, and its replica is elected within a few
    /// seconds (Redis delays the election 0.5–1 s, plus 1 s per rank) — so
    /// 2 × cluster-node-timeout + 5 s, the timeout as read from the cluster
    /// (Redis's default, 15 s, if it could not be read).
    pub fn hold(&self) -> Duration {
        if !self.cluster {
            return STANDALONE_HOLD;
        }
        let timeout = match self.node_timeout_ms.load(Ordering::Relaxed) {
            0 => DEFAULT_NODE_TIMEOUT_MS,
            ms => ms,
        };
        Duration::from_millis(2 * timeout + 5_000)
    }

    /// Changes whenever the slot map does.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Whether this is a Redis Cluster (else one standalone node).
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// The credentials every node takes.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The node owning `slot`.
    pub fn node_of(&self, slot: u16) -> Node {
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.nodes[map.owner[slot as usize] as usize].clone()
    }

    /// Every master node.
    pub fn masters(&self) -> Vec<Node> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).nodes.clone()
    }

    /// Reads the slot map again (cluster mode; at most once per
    /// `REFRESH_MIN`). Returns whether the map was read.
    pub fn refresh(&self) -> bool {
        if !self.cluster {
            return false;
        }
        {
            let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < REFRESH_MIN) {
                return false;
            }
            *last = Some(Instant::now());
        }
        match self.discover() {
            Ok(map) => {
                let mut cur = self.map.write().unwrap_or_else(|e| e.into_inner());
                if cur.nodes != map.nodes || cur.owner != map.owner {
                    self.version.fetch_add(1, Ordering::AcqRel);
                    log::info!(
                        "Redis Cluster slot map: {} masters ({})",
                        map.nodes.len(),
                        map.nodes.iter().map(Node::to_string).collect::<Vec<_>>().join(", ")
                    );
                }
                *cur = map;
                true
            }
            Err(DiscoverError::NotACluster(e) | DiscoverError::Unreachable(e)) => {
                log::debug!("Redis Cluster topology refresh failed: {e}");
                false
            }
        }
    }

    /// A client for `node`, with the shared credentials.
    pub fn client(&self, node: &Node) -> redis::RedisResult<redis::Client> {
        let creds = match (&self.auth.username, &self.auth.password) {
            (Some(u), Some(p)) => format!("{u}:{p}@"),
            (None, Some(p)) => format!(":{p}@"),
            (Some(u), None) => format!("{u}@"),
            (None, None) => String::new(),
        };
        let host = if node.host.contains(':') { format!("[{}]", node.host) } else { node.host.clone() };
        redis::Client::open(format!("redis://{creds}{host}:{}/{}", node.port, self.auth.db))
    }

    /// `CLUSTER SLOTS` from the known masters, then the seeds, first answer wins.
    fn discover(&self) -> Result<SlotMap, DiscoverError> {
        let mut candidates: Vec<Node> =
            self.answered.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        for m in self.masters() {
            if !candidates.contains(&m) {
                candidates.push(m);
            }
        }
        for s in &self.seeds {
            if !candidates.contains(s) {
                candidates.push(s.clone());
            }
        }
        let mut last = String::new();
        for node in &candidates {
            let answer = self.client(node).and_then(|c| {
                let mut con = c.get_connection_with_timeout(QUERY_TIMEOUT)?;
                con.set_read_timeout(Some(QUERY_TIMEOUT))?;
                let slots = redis::cmd("CLUSTER").arg("SLOTS").query::<redis::Value>(&mut con)?;
                if self.node_timeout_ms.load(Ordering::Relaxed) == 0 {
                    // Best effort: `CONFIG` may be renamed away (then the default is assumed).
                    let timeout =
                        redis::cmd("CONFIG").arg("GET").arg("cluster-node-timeout").query::<Vec<String>>(&mut con);
                    if let Some(ms) = timeout.ok().and_then(|v| v.get(1)?.parse::<u64>().ok()).filter(|&ms| ms > 0) {
                        self.node_timeout_ms.store(ms, Ordering::Relaxed);
                    }
                }
                Ok(slots)
            });
            match answer {
                Ok(v) => {
                    *self.answered.lock().unwrap_or_else(|e| e.into_inner()) = Some(node.clone());
                    return parse_slots(&v, node).map_err(DiscoverError::NotACluster);
                }
                Err(e) if e.code().is_some() => {
                    return Err(DiscoverError::NotACluster(format!("{node} is not a Redis Cluster node ({e})")));
                }
                Err(e) => last = format!("{node}: {e}"),
            }
        }
        Err(DiscoverError::Unreachable(last))
    }
}

/// Parses a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id…], replicas…]…]`.
/// An empty host means the node that answered.
fn parse_slots(v: &redis::Value, asked: &Node) -> Result<SlotMap, String> {
    use redis::Value;
    let Value::Array(ranges) = v else { return Err(format!("unexpected CLUSTER SLOTS reply {v:?}")) };
    let mut nodes: Vec<Node> = Vec::new();
    let mut owner = vec![u16::MAX; SLOTS];
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let host = match master.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        let host = if host.is_empty() || host == "?" { asked.host.clone() } else { host };
        let Some(Value::Int(port)) = master.get(1) else { continue };
        let node = Node { host, port: *port as u16 };
        let idx = match nodes.iter().position(|n| *n == node) {
            Some(i) => i,
            None => {
                nodes.push(node);
                nodes.len() - 1
            }
        };
        for s in (*start).max(0)..=(*end).min(SLOTS as i64 - 1) {
            owner[s as usize] = idx as u16;
        }
    }
    if nodes.is_empty() {
        return Err(format!("{asked} is a cluster node without slots (cluster not created yet?)"));
    }
    // Slots no master serves (a failing cluster) go to the first node: its
    // answer (CLUSTERDOWN or MOVED) makes the caller retry and refresh.
    for o in owner.iter_mut().filter(|o| **o == u16::MAX) {
        *o = 0;
    }
    Ok(SlotMap { nodes, owner })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis_cluster_keyslot() {
        // Values from `CLUSTER KEYSLOT` on redis-server 7.0.
        assert_eq!(crc16(b"123456789"), 0x31c3, "the CRC16-XMODEM check value");
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"somekey"), 11058);
        assert_eq!(slot(b"foo{hash_tag}"), slot(b"hash_tag"));
        assert_eq!(slot(b"{}foo"), crc16(b"{}foo") % 16384, "an empty tag hashes the whole key");
        assert_eq!(slot(b"a{b}{c}"), slot(b"b"), "the first tag counts");
        assert_eq!(slot(b"chat:{lobby}:seq"), room_slot("lobby"));
        assert_eq!(slot(b"chat:{lobby}:ch"), room_slot("lobby"));
    }

    #[test]
    fn urls_parse_with_and_without_credentials() {
        let (n, a) = parse_url("redis://:pw@h:7000").unwrap();
        assert_eq!((n.host.as_str(), n.port, a.password.as_deref(), a.username), ("h", 7000, Some("pw"), None));
        let (n, a) = parse_url("redis://u:pw@10.0.0.1/2").unwrap();
        assert_eq!((n.port, a.username.as_deref(), a.db), (6379, Some("u"), 2));
        assert!(parse_url("http://h").is_err());
        assert!(parse_url("redis://h:x").is_err());
    }

    #[test]
    fn cluster_slots_reply_maps_every_slot() {
        use redis::Value::*;
        let node = |h: &str, p: i64| Array(vec![BulkString(h.as_bytes().to_vec()), Int(p), BulkString(b"id".to_vec())]);
        let reply = Array(vec![
            Array(vec![Int(0), Int(8191), node("10.0.0.1", 7000), node("10.0.0.4", 7003)]),
            Array(vec![Int(8192), Int(16383), node("", 7001)]),
        ]);
        let asked = Node { host: "seed".into(), port: 7001 };
        let map = parse_slots(&reply, &asked).unwrap();
        assert_eq!(map.nodes.len(), 2);
        assert_eq!(map.nodes[map.owner[0] as usize].port, 7000);
        assert_eq!(map.nodes[map.owner[16383] as usize], Node { host: "seed".into(), port: 7001 });
    }
}
