//! Configuration: every knob the server reads from its environment, with its
//! default and the reason for it, validated once at start-up.
//!
//! [`ENV_VARS`] is the single table of variables: `websocket-server --help`
//! prints it, the README's configuration table is checked against it by a
//! test, and the Kubernetes contract test compares the manifests with it.
//! A value that does not parse stops the process at start-up with a message
//! naming the variable; nothing is re-read later.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

/// One environment variable the server reads.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    /// The variable's name.
    pub name: &'static str,
    /// The default, as written in the docs ("" means unset).
    pub default: &'static str,
    /// What it does, one line.
    pub help: &'static str,
}

/// Every variable the server reads, in the order of the README's table.
pub const ENV_VARS: &[EnvVar] = &[
    EnvVar {
        name: "PORT",
        default: "8080",
        help: "TCP port for HTTP and WebSocket (0 picks a free port; the log says which)",
    },
    EnvVar { name: "BIND_ADDR", default: "0.0.0.0", help: "address to listen on" },
    EnvVar {
        name: "ADMIN_PORT",
        default: "",
        help: "TCP port for /health, /ready and /metrics only; when set, /metrics is no longer answered on PORT",
    },
    EnvVar {
        name: "WORKERS",
        default: "available cores",
        help: "event-loop threads, each with its own listener (SO_REUSEPORT) and connections",
    },
    EnvVar {
        name: "MAX_CONNECTIONS",
        default: "open-file limit - 1000",
        help: "WebSocket connections per process; beyond it upgrades get 503 and /ready turns 503",
    },
    EnvVar {
        name: "MAX_MESSAGE_BYTES",
        default: "65536",
        help: "largest WebSocket message or frame accepted; larger is closed with 1009",
    },
    EnvVar {
        name: "MAX_CHAT_BYTES",
        default: "4096",
        help: "largest chat `message` text; larger gets an error frame `too_long`",
    },
    EnvVar {
        name: "MAX_OUTBOUND_BYTES",
        default: "1048576",
        help: "bytes queued to one client before it is closed as a slow consumer (1008)",
    },
    EnvVar {
        name: "WRITE_DUTY_PERCENT",
        default: "50",
        help:
            "under load, share of a worker's time its write passes may take; the rest coalesces output (100: no pacing)",
    },
    EnvVar {
        name: "WS_COMPRESSION",
        default: "1",
        help: "1 accepts permessage-deflate offers (each broadcast compressed once); 0 ignores them",
    },
    EnvVar {
        name: "COMPRESSION_MIN_BYTES",
        default: "128",
        help: "messages shorter than this are sent uncompressed even to clients that negotiated compression",
    },
    EnvVar { name: "MAX_REQUEST_BYTES", default: "8192", help: "largest HTTP request head; larger gets 431" },
    EnvVar {
        name: "HANDSHAKE_TIMEOUT_SECS",
        default: "10",
        help: "time to send a complete HTTP request (slowloris guard); idle keep-alive limit",
    },
    EnvVar {
        name: "PING_INTERVAL",
        default: "30",
        help: "seconds between server pings to a silent client; silent for twice this is closed (1001)",
    },
    EnvVar { name: "RATE_LIMIT", default: "10", help: "chat messages per second per connection (token bucket refill)" },
    EnvVar {
        name: "RATE_BURST",
        default: "20",
        help: "token bucket size; past it messages get `rate_limited`, 10 in a row close with 1008",
    },
    EnvVar { name: "HISTORY_ON_JOIN", default: "50", help: "messages of history sent on join without `since`" },
    EnvVar {
        name: "HISTORY_RING",
        default: "1000",
        help: "messages kept in memory per active room (resume window without MongoDB)",
    },
    EnvVar {
        name: "HISTORY_MAX_BYTES",
        default: "134217728",
        help: "memory for stored messages over all rooms; past it the least recently active rooms lose theirs",
    },
    EnvVar {
        name: "ALLOWED_ORIGINS",
        default: "",
        help: "comma-separated Origin values allowed to upgrade (unset: any); others get 403",
    },
    EnvVar {
        name: "AUTH_JWT_SECRET",
        default: "",
        help: "HMAC secret (32+ bytes): every upgrade and /history needs a JWT (HS256/384/512); unset: no auth",
    },
    EnvVar {
        name: "AUTH_JWT_PUBLIC_KEY_FILE",
        default: "",
        help: "PEM public key file instead of a secret: JWTs signed RS256/384/512, PS256/384/512, ES256/384 or EdDSA",
    },
    EnvVar { name: "AUTH_JWT_ISSUER", default: "", help: "required `iss` of tokens (unset: not checked)" },
    EnvVar {
        name: "AUTH_JWT_AUDIENCE",
        default: "",
        help: "required `aud` of tokens (unset: tokens with an `aud` are refused)",
    },
    EnvVar {
        name: "MAX_CONNECTIONS_PER_IP",
        default: "",
        help: "open WebSockets per client address (IPv6: per /64); beyond it upgrades get 429 (unset: no limit)",
    },
    EnvVar {
        name: "UPGRADE_RATE_PER_IP",
        default: "",
        help: "upgrade requests per second per client address (token bucket); beyond it 429 (unset: no limit)",
    },
    EnvVar { name: "UPGRADE_BURST_PER_IP", default: "20", help: "bucket size for UPGRADE_RATE_PER_IP" },
    EnvVar { name: "ECHO_ROUTE", default: "0", help: "1 serves a raw echo WebSocket at /echo (conformance testing)" },
    EnvVar {
        name: "DRAIN_DELAY_SECS",
        default: "5",
        help: "after SIGTERM: seconds /ready is 503 before clients are closed",
    },
    EnvVar {
        name: "DRAIN_WINDOW_SECS",
        default: "10",
        help: "seconds over which clients are closed with 1001, spread evenly",
    },
    EnvVar { name: "LOG_LEVEL", default: "info", help: "error, warn, info, debug or trace" },
    EnvVar {
        name: "POD_NAME",
        default: "host name",
        help: "this replica's name, in frames and logs (Kubernetes downward API)",
    },
    EnvVar {
        name: "REDIS_URL",
        default: "",
        help: "redis://[:password@]host:port[/db]; set: replica mode (fan-out through Redis)",
    },
    EnvVar {
        name: "REDIS_HOST",
        default: "",
        help: "alternative to REDIS_URL (with REDIS_PORT, default 6379, and REDIS_PASSWORD)",
    },
    EnvVar { name: "REDIS_PORT", default: "6379", help: "port for REDIS_HOST" },
    EnvVar { name: "REDIS_PASSWORD", default: "", help: "password for REDIS_HOST (and REDIS_CLUSTER_NODES)" },
    EnvVar {
        name: "ROOM_LINGER_SECS",
        default: "30",
        help: "replica mode: seconds a room stays subscribed after its last member here left",
    },
    EnvVar {
        name: "REDIS_CLUSTER_NODES",
        default: "",
        help: "redis://[:password@]host:port,… seed nodes of a Redis Cluster; set: replica mode on the cluster",
    },
    EnvVar {
        name: "MONGO_URI",
        default: "",
        help: "mongodb://… (database from the path, default `chat`); set: every message is stored",
    },
    EnvVar {
        name: "MONGO_QUEUE_MAX",
        default: "100000",
        help: "messages held for MongoDB while it is slow or down; beyond it they are dropped and counted",
    },
];

/// A variable that is set but not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Which variable.
    pub name: &'static str,
    /// What was wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.name, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration. Every field is documented in [`ENV_VARS`].
#[derive(Debug, Clone)]
pub struct Config {
    /// Port to listen on; 0 lets the kernel pick one.
    pub port: u16,
    /// Address to listen on.
    pub bind_addr: IpAddr,
    /// Port of the operator endpoints (/health, /ready, /metrics); `None`:
    /// they are on `port` with everything else.
    pub admin_port: Option<u16>,
    /// Number of event-loop threads.
    pub workers: usize,
    /// WebSocket connections allowed in this process.
    pub max_connections: usize,
    /// Largest message (and frame) accepted from a client.
    pub max_message_bytes: usize,
    /// Largest chat text.
    pub max_chat_bytes: usize,
    /// Outbound bytes queued to one client before it counts as a slow consumer.
    pub max_outbound_bytes: usize,
    /// Percent of a worker's time its flush passes may take under load (net::pacing).
    pub write_duty_percent: u32,
    /// Accept permessage-deflate offers.
    pub compression: bool,
    /// Messages shorter than this are never compressed.
    pub compression_min_bytes: usize,
    /// Largest HTTP request head.
    pub max_request_bytes: usize,
    /// Deadline for a complete HTTP request.
    pub handshake_timeout: Duration,
    /// Ping a client silent this long; close it when silent twice this long.
    pub ping_interval: Duration,
    /// Token-bucket refill, chat messages per second.
    pub rate_limit: f64,
    /// Token-bucket size.
    pub rate_burst: u32,
    /// Messages of history sent on a plain join.
    pub history_on_join: usize,
    /// Messages kept per active room.
    pub history_ring: usize,
    /// Bytes of stored messages over all rooms.
    pub history_max_bytes: usize,
    /// Origins allowed to upgrade; empty means any.
    pub allowed_origins: Vec<String>,
    /// JWT verification (`AUTH_JWT_*`); `None`: anyone may connect.
    pub auth: Option<crate::auth::Verifier>,
    /// Per-address limits (`MAX_CONNECTIONS_PER_IP`, `UPGRADE_RATE_PER_IP`).
    pub peer_limits: crate::auth::peer::PeerLimits,
    /// Serve the raw echo route at `/echo`.
    pub echo_route: bool,
    /// Time between the signal and the first close, while `/ready` is 503.
    pub drain_delay: Duration,
    /// Time over which connections are closed.
    pub drain_window: Duration,
    /// Log level.
    pub log_level: log::LevelFilter,
    /// This replica's name.
    pub pod_name: String,
    /// Redis URL; `Some` selects replica mode.
    pub redis_url: Option<String>,
    /// Redis Cluster seed URLs (comma-separated); `Some` selects replica
    /// mode on a cluster (`redis_url` is then `None`).
    pub redis_cluster_nodes: Option<String>,
    /// REDIS_PASSWORD, for cluster nodes whose URL has none.
    pub redis_password: Option<String>,
    /// How long a room stays subscribed after its last local member left.
    pub room_linger: Duration,
    /// MongoDB URI; `Some` enables persistence.
    pub mongo_uri: Option<String>,
    /// Bound of the MongoDB writer's queue.
    pub mongo_queue_max: usize,
}

/// Connections kept free below the open-file limit for HTTP requests,
/// Redis, MongoDB and the process's own descriptors.
const FD_RESERVE: usize = 1000;

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    /// Empty values count as unset, as Kubernetes manifests often leave them.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &'static str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let workers_default = std::thread::available_parallelism().map_or(1, |n| n.get());
        let max_conn_default = open_file_limit().map_or(10_000, |n| n.saturating_sub(FD_RESERVE).max(1));

        let redis_url = match (get("REDIS_URL"), get("REDIS_HOST")) {
            (Some(url), _) => Some(url),
            (None, Some(host)) => {
                let port: u16 = parse(&get, "REDIS_PORT", 6379)?;
                Some(match get("REDIS_PASSWORD") {
                    // Percent-encoded: a password with `@`, `/` or `:` must not end the userinfo.
                    Some(pw) => format!("redis://:{}@{host}:{port}", percent_encode(&pw)),
                    None => format!("redis://{host}:{port}"),
                })
            }
            (None, None) => None,
        };
        if let Some(url) = &redis_url {
            if !url.starts_with("redis://") && !url.starts_with("rediss://") {
                return Err(invalid("REDIS_URL", "must start with redis://"));
            }
        }
        let redis_cluster_nodes = get("REDIS_CLUSTER_NODES");
        if let Some(nodes) = &redis_cluster_nodes {
            if redis_url.is_some() {
                return Err(invalid("REDIS_CLUSTER_NODES", "set either it or REDIS_URL/REDIS_HOST, not both"));
            }
            if let Some(bad) = nodes.split(',').map(str::trim).find(|u| !u.starts_with("redis://")) {
                return Err(invalid("REDIS_CLUSTER_NODES", &format!("{bad:?} must start with redis://")));
            }
        }
        let mongo_uri = get("MONGO_URI");
        if let Some(uri) = &mongo_uri {
            if !uri.starts_with("mongodb://") && !uri.starts_with("mongodb+srv://") {
                return Err(invalid("MONGO_URI", "must start with mongodb:// or mongodb+srv://"));
            }
        }

        let config = Config {
            port: parse(&get, "PORT", 8080)?,
            bind_addr: parse(&get, "BIND_ADDR", IpAddr::from([0, 0, 0, 0]))?,
            admin_port: get("ADMIN_PORT").map(|_| parse(&get, "ADMIN_PORT", 0)).transpose()?,
            workers: at_least(1, "WORKERS", parse(&get, "WORKERS", workers_default)?)?,
            max_connections: at_least(1, "MAX_CONNECTIONS", parse(&get, "MAX_CONNECTIONS", max_conn_default)?)?,
            max_message_bytes: at_least(125, "MAX_MESSAGE_BYTES", parse(&get, "MAX_MESSAGE_BYTES", 65_536)?)?,
            max_chat_bytes: at_least(1, "MAX_CHAT_BYTES", parse(&get, "MAX_CHAT_BYTES", 4096)?)?,
            max_outbound_bytes: at_least(65_536, "MAX_OUTBOUND_BYTES", parse(&get, "MAX_OUTBOUND_BYTES", 1 << 20)?)?,
            write_duty_percent: within(1, 100, "WRITE_DUTY_PERCENT", parse(&get, "WRITE_DUTY_PERCENT", 50)?)? as u32,
            compression: parse_bool_or(&get, "WS_COMPRESSION", true)?,
            compression_min_bytes: parse(&get, "COMPRESSION_MIN_BYTES", 128)?,
            max_request_bytes: at_least(512, "MAX_REQUEST_BYTES", parse(&get, "MAX_REQUEST_BYTES", 8192)?)?,
            handshake_timeout: secs(within(
                1,
                MAX_SECS,
                "HANDSHAKE_TIMEOUT_SECS",
                parse(&get, "HANDSHAKE_TIMEOUT_SECS", 10)?,
            )?),
            ping_interval: secs(within(1, MAX_SECS, "PING_INTERVAL", parse(&get, "PING_INTERVAL", 30)?)?),
            rate_limit: parse(&get, "RATE_LIMIT", 10.0)?,
            rate_burst: at_least(1, "RATE_BURST", parse(&get, "RATE_BURST", 20)?)?,
            history_on_join: parse(&get, "HISTORY_ON_JOIN", 50)?,
            history_ring: at_least(1, "HISTORY_RING", parse(&get, "HISTORY_RING", 1000)?)?,
            history_max_bytes: at_least(1 << 20, "HISTORY_MAX_BYTES", parse(&get, "HISTORY_MAX_BYTES", 128 << 20)?)?,
            allowed_origins: get("ALLOWED_ORIGINS")
                .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
            auth: crate::auth::Verifier::from_env(&get)?,
            peer_limits: crate::auth::peer::PeerLimits {
                max_connections: parse_opt(&get, "MAX_CONNECTIONS_PER_IP")?
                    .map(|n| at_least(1, "MAX_CONNECTIONS_PER_IP", n))
                    .transpose()?,
                upgrade_rate: parse_opt(&get, "UPGRADE_RATE_PER_IP")?,
                upgrade_burst: at_least(1, "UPGRADE_BURST_PER_IP", parse(&get, "UPGRADE_BURST_PER_IP", 20)?)?,
            },
            echo_route: parse_bool(&get, "ECHO_ROUTE")?,
            drain_delay: secs(within(0, MAX_SECS, "DRAIN_DELAY_SECS", parse(&get, "DRAIN_DELAY_SECS", 5)?)?),
            drain_window: secs(within(0, MAX_SECS, "DRAIN_WINDOW_SECS", parse(&get, "DRAIN_WINDOW_SECS", 10)?)?),
            log_level: parse(&get, "LOG_LEVEL", log::LevelFilter::Info)?,
            pod_name: get("POD_NAME").unwrap_or_else(host_name),
            redis_url,
            redis_cluster_nodes,
            redis_password: get("REDIS_PASSWORD"),
            room_linger: secs(parse(&get, "ROOM_LINGER_SECS", 30)?),
            mongo_uri,
            mongo_queue_max: at_least(1, "MONGO_QUEUE_MAX", parse(&get, "MONGO_QUEUE_MAX", 100_000)?)?,
        };
        if config.admin_port.is_some_and(|p| p != 0 && p == config.port) {
            return Err(invalid("ADMIN_PORT", "must differ from PORT"));
        }
        if !(config.rate_limit > 0.0 && config.rate_limit.is_finite()) {
            return Err(invalid("RATE_LIMIT", "must be a positive number"));
        }
        if config.peer_limits.upgrade_rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
            return Err(invalid("UPGRADE_RATE_PER_IP", "must be a positive number"));
        }
        if config.history_on_join > config.history_ring {
            return Err(invalid("HISTORY_ON_JOIN", "must not exceed HISTORY_RING"));
        }
        if config.max_chat_bytes > config.max_message_bytes {
            return Err(invalid("MAX_CHAT_BYTES", "must not exceed MAX_MESSAGE_BYTES"));
        }
        // A chat frame is at most ~6 × MAX_CHAT_BYTES (JSON escapes a control
        // character as \u00XX) plus its other fields; a client must be able to
        // hold two of them, or one broadcast would close every member.
        let two_frames = 2 * (6 * config.max_chat_bytes + 1024);
        if config.max_outbound_bytes < two_frames {
            return Err(invalid(
                "MAX_OUTBOUND_BYTES",
                &format!("must hold two of the largest chat frames: at least {two_frames}"),
            ));
        }
        if config.pod_name.len() > 253 || config.pod_name.chars().any(|c| c.is_control()) {
            return Err(invalid("POD_NAME", "must be at most 253 printable characters"));
        }
        Ok(config)
    }

    /// The effective configuration as one log line (secrets in URLs masked).
    pub fn summary(&self) -> String {
        format!(
            "pod={} listen={}:{} admin={} workers={} max_connections={} max_message_bytes={} max_chat_bytes={} \
             max_outbound_bytes={} write_duty={}% max_request_bytes={} handshake_timeout={}s ping_interval={}s rate={}/s burst={} \
             history_on_join={} history_ring={} history_max_bytes={} echo_route={} compression={} compression_min_bytes={} origins={} drain_delay={}s \
             drain_window={}s redis={} mongo={} mongo_queue_max={} log_level={} auth={} per_ip={}",
            self.pod_name,
            self.bind_addr,
            self.port,
            self.admin_port.map_or("off".to_string(), |p| format!("{}:{p}", self.bind_addr)),
            self.workers,
            self.max_connections,
            self.max_message_bytes,
            self.max_chat_bytes,
            self.max_outbound_bytes,
            self.write_duty_percent,
            self.max_request_bytes,
            self.handshake_timeout.as_secs(),
            self.ping_interval.as_secs(),
            self.rate_limit,
            self.rate_burst,
            self.history_on_join,
            self.history_ring,
            self.history_max_bytes,
            self.echo_route,
            self.compression,
            self.compression_min_bytes,
            if self.allowed_origins.is_empty() { "any".to_string() } else { self.allowed_origins.join(",") },
            self.drain_delay.as_secs(),
            self.drain_window.as_secs(),
            match (&self.redis_url, &self.redis_cluster_nodes) {
                (Some(url), _) => mask_password(url),
                (None, Some(nodes)) =>
                    format!("cluster:{}", nodes.split(',').map(mask_password).collect::<Vec<_>>().join(",")),
                (None, None) => "off".to_string(),
            },
            self.mongo_uri.as_deref().map_or("off".to_string(), mask_password),
            self.mongo_queue_max,
            self.log_level,
            self.auth.as_ref().map_or("off".to_string(), |v| v.describe()),
            crate::auth::peer::describe(&self.peer_limits),
        )
    }
}

/// Replaces the password of `scheme://user:password@host…` with `***`.
pub fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => match rest[..at].find(':') {
            Some(colon) => format!("{}{}:***{}", &url[..scheme_end], &rest[..colon], &rest[at..]),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

fn parse<T: std::str::FromStr>(
    get: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, ConfigError>
where
    T::Err: fmt::Display,
{
    match get(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e: T::Err| invalid(name, &format!("{v:?}: {e}"))),
    }
}

/// Like [`parse`], for a variable whose default is unset.
fn parse_opt<T: std::str::FromStr>(
    get: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
) -> Result<Option<T>, ConfigError>
where
    T::Err: fmt::Display,
{
    get(name).map(|v| v.parse().map_err(|e: T::Err| invalid(name, &format!("{v:?}: {e}")))).transpose()
}

fn parse_bool(get: &impl Fn(&'static str) -> Option<String>, name: &'static str) -> Result<bool, ConfigError> {
    parse_bool_or(get, name, false)
}

fn parse_bool_or(
    get: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(name).as_deref() {
        None => Ok(default),
        Some("0") | Some("false") | Some("no") | Some("off") => Ok(false),
        Some("1") | Some("true") | Some("yes") | Some("on") => Ok(true),
        Some(v) => Err(invalid(name, &format!("{v:?}: expected 1 or 0"))),
    }
}

fn at_least<T: PartialOrd + fmt::Display>(min: T, name: &'static str, value: T) -> Result<T, ConfigError> {
    if value < min {
        Err(invalid(name, &format!("{value} is below the minimum {min}")))
    } else {
        Ok(value)
    }
}

fn invalid(name: &'static str, reason: &str) -> ConfigError {
    ConfigError { name, reason: reason.to_string() }
}

/// The longest timeout or interval accepted (a day): the workers keep
/// deadlines as `u32` seconds since the start and compute `2 ×
/// PING_INTERVAL`, so a larger value would be truncated or overflow.
const MAX_SECS: u64 = 86_400;

/// `value` if it is in `min..=max`; otherwise an error naming the variable.
fn within(min: u64, max: u64, name: &'static str, value: u64) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(invalid(name, &format!("must be between {min} and {max} seconds")))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The soft limit on open files (RLIMIT_NOFILE), read from /proc.
pub use crate::procfs::open_file_limit;

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "websocket-server".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = config(&[("POD_NAME", "p")]).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.max_message_bytes, 65_536);
        assert_eq!(c.max_chat_bytes, 4096);
        assert_eq!(c.history_on_join, 50);
        assert_eq!(c.history_ring, 1000);
        assert_eq!(c.drain_delay, Duration::from_secs(5));
        assert_eq!(c.drain_window, Duration::from_secs(10));
        assert!(c.redis_url.is_none() && c.mongo_uri.is_none());
        assert!(!c.echo_route);
        for var in ENV_VARS {
            let parsed: Option<u64> = var.default.parse().ok();
            if let Some(n) = parsed {
                let actual = match var.name {
                    "PORT" => c.port as u64,
                    "MAX_MESSAGE_BYTES" => c.max_message_bytes as u64,
                    "MAX_CHAT_BYTES" => c.max_chat_bytes as u64,
                    "MAX_OUTBOUND_BYTES" => c.max_outbound_bytes as u64,
                    "WRITE_DUTY_PERCENT" => c.write_duty_percent as u64,
                    "MAX_REQUEST_BYTES" => c.max_request_bytes as u64,
                    "WS_COMPRESSION" => c.compression as u64,
                    "COMPRESSION_MIN_BYTES" => c.compression_min_bytes as u64,
                    "HANDSHAKE_TIMEOUT_SECS" => c.handshake_timeout.as_secs(),
                    "PING_INTERVAL" => c.ping_interval.as_secs(),
                    "RATE_LIMIT" => c.rate_limit as u64,
                    "RATE_BURST" => c.rate_burst as u64,
                    "HISTORY_ON_JOIN" => c.history_on_join as u64,
                    "HISTORY_RING" => c.history_ring as u64,
                    "HISTORY_MAX_BYTES" => c.history_max_bytes as u64,
                    "ECHO_ROUTE" => c.echo_route as u64,
                    "DRAIN_DELAY_SECS" => c.drain_delay.as_secs(),
                    "DRAIN_WINDOW_SECS" => c.drain_window.as_secs(),
                    "MONGO_QUEUE_MAX" => c.mongo_queue_max as u64,
                    "ROOM_LINGER_SECS" => c.room_linger.as_secs(),
                    "UPGRADE_BURST_PER_IP" => u64::from(c.peer_limits.upgrade_burst),
                    "REDIS_PORT" => continue,
                    other => panic!("numeric default of {other} not checked"),
                };
                assert_eq!(actual, n, "{} default", var.name);
            }
        }
    }

    #[test]
    fn readme_table_is_what_help_prints() {
        // Backticks aside (the README marks up names), each row says what
        // `--help` says: name, default and meaning.
        let readme = include_str!("../../README.md");
        let plain = |s: &str| s.replace('`', "");
        for var in ENV_VARS {
            let default = if var.default.is_empty() { "unset" } else { var.default };
            let prefix = format!("| `{}` | {} | ", var.name, default);
            let row = readme.lines().find(|l| l.starts_with(&prefix));
            let Some(row) = row else { panic!("README's configuration table lacks a row starting {prefix}") };
            let meaning = row[prefix.len()..].trim_end_matches(" |");
            assert_eq!(plain(meaning), plain(var.help), "README's meaning of {} differs from --help", var.name);
        }
    }

    #[test]
    fn invalid_values_name_the_variable() {
        assert_eq!(config(&[("PORT", "http")]).unwrap_err().name, "PORT");
        assert_eq!(config(&[("WORKERS", "0")]).unwrap_err().name, "WORKERS");
        assert_eq!(config(&[("ECHO_ROUTE", "maybe")]).unwrap_err().name, "ECHO_ROUTE");
        assert_eq!(config(&[("AUTH_JWT_SECRET", "short")]).unwrap_err().name, "AUTH_JWT_SECRET");
        let both = [("AUTH_JWT_SECRET", "x".repeat(32)), ("AUTH_JWT_PUBLIC_KEY_FILE", "/k.pem".to_string())];
        let both: Vec<(&str, &str)> = both.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(config(&both).unwrap_err().name, "AUTH_JWT_SECRET");
        assert_eq!(
            config(&[("AUTH_JWT_PUBLIC_KEY_FILE", "/nonexistent.pem")]).unwrap_err().name,
            "AUTH_JWT_PUBLIC_KEY_FILE"
        );
        assert_eq!(config(&[("AUTH_JWT_AUDIENCE", "chat")]).unwrap_err().name, "AUTH_JWT_AUDIENCE");
        assert_eq!(config(&[("MAX_CONNECTIONS_PER_IP", "0")]).unwrap_err().name, "MAX_CONNECTIONS_PER_IP");
        assert_eq!(config(&[("UPGRADE_RATE_PER_IP", "-1")]).unwrap_err().name, "UPGRADE_RATE_PER_IP");
        assert_eq!(config(&[("WS_COMPRESSION", "maybe")]).unwrap_err().name, "WS_COMPRESSION");
        assert!(!config(&[("WS_COMPRESSION", "0")]).unwrap().compression);
        assert_eq!(config(&[("RATE_LIMIT", "-1")]).unwrap_err().name, "RATE_LIMIT");
        assert_eq!(config(&[("REDIS_URL", "localhost:6379")]).unwrap_err().name, "REDIS_URL");
        assert_eq!(config(&[("REDIS_CLUSTER_NODES", "redis://a:1,b:2")]).unwrap_err().name, "REDIS_CLUSTER_NODES");
        let both = [("REDIS_CLUSTER_NODES", "redis://a:1"), ("REDIS_URL", "redis://b:2")];
        assert_eq!(config(&both).unwrap_err().name, "REDIS_CLUSTER_NODES");
        assert_eq!(config(&[("MONGO_URI", "localhost")]).unwrap_err().name, "MONGO_URI");
        assert_eq!(config(&[("HISTORY_ON_JOIN", "2000")]).unwrap_err().name, "HISTORY_ON_JOIN");
        assert_eq!(config(&[("LOG_LEVEL", "loud")]).unwrap_err().name, "LOG_LEVEL");
        assert_eq!(config(&[("ADMIN_PORT", "metrics")]).unwrap_err().name, "ADMIN_PORT");
        assert_eq!(config(&[("PORT", "8080"), ("ADMIN_PORT", "8080")]).unwrap_err().name, "ADMIN_PORT");
        assert_eq!(config(&[("ADMIN_PORT", "9090")]).unwrap().admin_port, Some(9090));
        assert_eq!(config(&[("ADMIN_PORT", "")]).unwrap().admin_port, None, "blank counts as unset");
    }

    #[test]
    fn timeouts_are_range_checked_not_truncated() {
        // 2^32 + 5 used to become 5 s through `as u32`; u64::MAX / 2 + 1 overflowed 2 × PING_INTERVAL.
        for (name, value) in [
            ("PING_INTERVAL", "4294967301"),
            ("PING_INTERVAL", "9223372036854775808"),
            ("HANDSHAKE_TIMEOUT_SECS", "4294967296"),
            ("DRAIN_DELAY_SECS", "100000"),
            ("DRAIN_WINDOW_SECS", "86401"),
            ("PING_INTERVAL", "0"),
        ] {
            let e = config(&[(name, value)]).unwrap_err();
            assert_eq!(e.name, name, "{name}={value}");
            assert!(e.to_string().contains(name), "{e}");
        }
        let c = config(&[("PING_INTERVAL", "86400"), ("DRAIN_DELAY_SECS", "0")]).unwrap();
        assert_eq!((c.ping_interval.as_secs(), c.drain_delay.as_secs()), (86_400, 0));
    }

    #[test]
    fn a_redis_password_is_percent_encoded_into_the_url() {
        let pw = "p@ss/w:rd?#%é";
        let c = config(&[("REDIS_HOST", "r"), ("REDIS_PASSWORD", pw)]).unwrap();
        let url = c.redis_url.unwrap();
        assert_eq!(url, "redis://:p%40ss%2Fw%3Ard%3F%23%25%C3%A9@r:6379");
        let info = redis::IntoConnectionInfo::into_connection_info(url.as_str()).unwrap();
        assert_eq!(info.redis_settings().password(), Some(pw), "the driver reads the password back");
        assert_eq!(info.addr().to_string(), "r:6379");
    }

    #[test]
    fn redis_host_and_port_build_a_url() {
        let c = config(&[("REDIS_HOST", "redis-service"), ("REDIS_PASSWORD", "s3cret")]).unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://:s3cret@redis-service:6379"));
        let c = config(&[("REDIS_HOST", "r"), ("REDIS_PORT", "7000")]).unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://r:7000"));
        let c = config(&[("REDIS_URL", "redis://a:1"), ("REDIS_HOST", "b")]).unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://a:1"));
        let c = config(&[("REDIS_URL", "  ")]).unwrap();
        assert!(c.redis_url.is_none(), "blank counts as unset");
    }

    #[test]
    fn the_jwt_secret_is_never_printed() {
        let secret = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";
        let c = config(&[("AUTH_JWT_SECRET", secret)]).unwrap();
        assert!(!c.summary().contains(secret) && !format!("{c:?}").contains(secret));
        assert!(c.summary().contains("auth=AUTH_JWT_SECRET (HS256,HS384,HS512)"), "{}", c.summary());
    }

    #[test]
    fn passwords_are_masked_in_the_summary() {
        assert_eq!(mask_password("redis://:pw@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(mask_password("mongodb://u:p@a,b/chat?x=1"), "mongodb://u:***@a,b/chat?x=1");
        assert_eq!(mask_password("mongodb://a:27017/chat"), "mongodb://a:27017/chat");
        let c = config(&[("REDIS_URL", "redis://:topsecret@r:6379")]).unwrap();
        assert!(!c.summary().contains("topsecret"));
    }
}
