//! Configuration: every knob the server reads from its environment, with its
//! default and the reason for it, validated once at start-up.
//!
//! Each variable is declared once, in the [`config!`] table below: its name,
//! type, how it is read (default, minimum, rule; see [`knob`]), its
//! documented default and its help, and the [`Config`] field it fills. From
//! that table come [`ENV_VARS`] (which `websocket-server --help` prints, the
//! README's configuration table is checked against by a test, and the
//! Kubernetes contract test compares the manifests with), the `Config`
//! struct, the parsing with its range checks, and [`Config::summary`].
//! Fields built from several variables (`redis_url`, `auth`, `peer_limits`)
//! are declared after it, and checks between variables are in
//! [`Config::check`]. A value that does not parse stops the process at
//! start-up with a message naming the variable; nothing is re-read later.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use crate::auth::peer::{self, PeerLimits};
use crate::auth::Verifier;

mod knob;
use knob::{flag, list, optional, positive, secs, text, text_or, value, Bounded};

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

/// Declares the variables and the fields derived from several of them, and
/// generates [`ENV_VARS`], [`Config`], its parsing and its summary.
///
/// A variable: `NAME: Type = spec, "documented default", "help" => field;`
/// (`=> field, show f` when the summary must not print the value as is;
/// no `=> field` when only a derived field reads it). Each variable is read
/// into a local named `NAME`, in table order; a derived field
/// `field: Type = expression;` may use those locals and `get` (the lookup).
macro_rules! config {
    (
        knobs {
            $(
                $var:ident: $ty:ty = $spec:expr, $default:literal, $help:literal
                $(=> $field:ident $(, show $show:expr)?)?;
            )*
        }
        derived($get:ident) {
            $( $(#[doc = $ddoc:literal])* $dfield:ident: $dty:ty = $dexpr:expr, show $dshow:expr; )*
        }
    ) => {
        /// Every variable the server reads, in the order of the README's table.
        pub const ENV_VARS: &[EnvVar] = &[ $( EnvVar { name: stringify!($var), default: $default, help: $help }, )* ];

        /// The validated configuration: a field per variable (its doc is the
        /// variable's help; see [`ENV_VARS`]), then the fields derived from several.
        #[derive(Debug, Clone)]
        pub struct Config {
            $( $( #[doc = $help] pub $field: $ty, )? )*
            $( $(#[doc = $ddoc])* pub $dfield: $dty, )*
        }

        impl Config {
            /// Reads every variable through `get`, in table order, then the derived fields.
            #[allow(non_snake_case, unused_variables)]
            fn read($get: &dyn Fn(&'static str) -> Option<String>) -> Result<Config, ConfigError> {
                $( let $var: $ty = knob::Spec::read($spec, stringify!($var), $get(stringify!($var)))?; )*
                $( let $dfield: $dty = $dexpr; )*
                Ok(Config { $( $( $field: $var, )? )* $( $dfield, )* })
            }

            /// The effective configuration as one log line, `field=value` in
            /// table order (passwords masked, secrets never printed).
            pub fn summary(&self) -> String {
                let parts: Vec<String> = vec![
                    $( $( format!("{}={}", stringify!($field), config!(@show &self.$field $(, $show)?)), )? )*
                    $( format!("{}={}", stringify!($dfield), ($dshow)(&self.$dfield)), )*
                ];
                parts.join(" ")
            }
        }
    };
    (@show $value:expr) => { knob::Show::show($value) };
    (@show $value:expr, $show:expr) => { ($show)($value) };
}

config! {
    knobs {
        PORT: u16 = value(8080), "8080",
            "TCP port for HTTP and WebSocket (0 picks a free port; the log says which)" => port;
        BIND_ADDR: IpAddr = value(IpAddr::from([0, 0, 0, 0])), "0.0.0.0",
            "address to listen on" => bind_addr;
        ADMIN_PORT: Option<u16> = optional(), "",
            "TCP port for /health, /ready and /metrics only; when set, /metrics is no longer answered on PORT" => admin_port;
        WORKERS: usize = value(available_cores()).min(1), "available cores",
            "event-loop threads, each with its own listener (SO_REUSEPORT) and connections" => workers;
        MAX_CONNECTIONS: usize = value(default_max_connections()).min(1), "open-file limit - 1000",
            "WebSocket connections per process; beyond it upgrades get 503 and /ready turns 503" => max_connections;
        MAX_MESSAGE_BYTES: usize = value(65_536).min(125), "65536",
            "largest WebSocket message or frame accepted; larger is closed with 1009" => max_message_bytes;
        MAX_CHAT_BYTES: usize = value(4096).min(1), "4096",
            "largest chat `message` text; larger gets an error frame `too_long`" => max_chat_bytes;
        MAX_OUTBOUND_BYTES: usize = value(1 << 20).min(65_536), "1048576",
            "bytes queued to one client before it is closed as a slow consumer (1008)" => max_outbound_bytes;
        WRITE_DUTY_PERCENT: u32 = value(50).min(1).rule(percent), "50",
            "under load, share of a worker's time its write passes may take; the rest coalesces output (100: no pacing)" => write_duty_percent;
        WS_COMPRESSION: bool = flag(true), "1",
            "1 accepts permessage-deflate offers (each broadcast compressed once); 0 ignores them" => compression;
        COMPRESSION_MIN_BYTES: usize = value(128), "128",
            "messages shorter than this are sent uncompressed even to clients that negotiated compression" => compression_min_bytes;
        MAX_REQUEST_BYTES: usize = value(8192).min(512), "8192",
            "largest HTTP request head; larger gets 431" => max_request_bytes;
        HANDSHAKE_TIMEOUT_SECS: Duration = secs(10).within(1, MAX_SECS), "10",
            "time to send a complete HTTP request (slowloris guard); idle keep-alive limit" => handshake_timeout;
        PING_INTERVAL: Duration = secs(30).within(1, MAX_SECS), "30",
            "seconds between server pings to a silent client; silent for twice this is closed (1001)" => ping_interval;
        RATE_LIMIT: f64 = value(10.0).rule(positive), "10",
            "chat messages per second per connection (token bucket refill)" => rate_limit;
        RATE_BURST: u32 = value(20).min(1), "20",
            "token bucket size; past it messages get `rate_limited`, 10 in a row close with 1008" => rate_burst;
        HISTORY_ON_JOIN: usize = value(50), "50",
            "messages of history sent on join without `since`" => history_on_join;
        HISTORY_RING: usize = value(1000).min(1), "1000",
            "messages kept in memory per active room (resume window without MongoDB)" => history_ring;
        HISTORY_MAX_BYTES: usize = value(128 << 20).min(1 << 20), "134217728",
            "memory for stored messages over all rooms; past it the least recently active rooms lose theirs" => history_max_bytes;
        ALLOWED_ORIGINS: Vec<String> = list(), "",
            "comma-separated Origin values allowed to upgrade (unset: any); others get 403" => allowed_origins;
        // Read by `auth::Verifier::from_env` (the derived `auth` below).
        AUTH_JWT_SECRET: Option<String> = text(), "",
            "HMAC secret (32+ bytes): every upgrade and /history needs a JWT (HS256/384/512); unset: no auth";
        AUTH_JWT_PUBLIC_KEY_FILE: Option<String> = text(), "",
            "PEM public key file instead of a secret: JWTs signed RS256/384/512, PS256/384/512, ES256/384 or EdDSA";
        AUTH_JWT_ISSUER: Option<String> = text(), "",
            "required `iss` of tokens (unset: not checked)";
        AUTH_JWT_AUDIENCE: Option<String> = text(), "",
            "required `aud` of tokens (unset: tokens with an `aud` are refused)";
        // The derived `peer_limits` below.
        MAX_CONNECTIONS_PER_IP: Option<u32> = optional().min(1), "",
            "open WebSockets per client address (IPv6: per /64); beyond it upgrades get 429 (unset: no limit)";
        UPGRADE_RATE_PER_IP: Option<f64> = optional().rule(positive), "",
            "upgrade requests per second per client address (token bucket); beyond it 429 (unset: no limit)";
        UPGRADE_BURST_PER_IP: u32 = value(20).min(1), "20",
            "bucket size for UPGRADE_RATE_PER_IP";
        ECHO_ROUTE: bool = flag(false), "0",
            "1 serves a raw echo WebSocket at /echo (conformance testing)" => echo_route;
        DRAIN_DELAY_SECS: Duration = secs(5).within(0, MAX_SECS), "5",
            "after SIGTERM: seconds /ready is 503 before clients are closed" => drain_delay;
        DRAIN_WINDOW_SECS: Duration = secs(10).within(0, MAX_SECS), "10",
            "seconds over which clients are closed with 1001, spread evenly" => drain_window;
        LOG_LEVEL: log::LevelFilter = value(log::LevelFilter::Info), "info",
            "error, warn, info, debug or trace" => log_level;
        POD_NAME: String = text_or(host_name), "host name",
            "this replica's name, in frames and logs (Kubernetes downward API)" => pod_name;
        // REDIS_URL, or REDIS_HOST/PORT/PASSWORD: the derived `redis_url` below.
        REDIS_URL: Option<String> = text().rule(redis_scheme), "",
            "redis://[:password@]host:port[/db]; set: replica mode (fan-out through Redis)";
        REDIS_HOST: Option<String> = text(), "",
            "alternative to REDIS_URL (with REDIS_PORT, default 6379, and REDIS_PASSWORD)";
        REDIS_PORT: Option<String> = text(), "6379",
            "port for REDIS_HOST";
        REDIS_PASSWORD: Option<String> = text(), "",
            "password for REDIS_HOST (and REDIS_CLUSTER_NODES)" => redis_password, show secret;
        ROOM_LINGER_SECS: Duration = secs(30), "30",
            "replica mode: seconds a room stays subscribed after its last member here left" => room_linger;
        REDIS_CLUSTER_NODES: Option<String> = text().rule(cluster_nodes), "",
            "redis://[:password@]host:port,… seed nodes of a Redis Cluster; set: replica mode on the cluster" => redis_cluster_nodes, show masked_nodes;
        // auto or a number of ms: the derived `redis_failover_hold` below.
        REDIS_FAILOVER_HOLD_MS: Option<String> = text().rule(failover_hold_rule), "auto",
            "replica mode: ms a message waits for its Redis node (restart, failover) before its sender gets `unavailable`; auto: 3000, on a cluster 2 × cluster-node-timeout + 5000";
        MONGO_URI: Option<String> = text().rule(mongo_scheme), "",
            "mongodb://… (database from the path, default `chat`); set: every message is stored" => mongo_uri, show masked;
        MONGO_QUEUE_MAX: usize = value(100_000).min(1), "100000",
            "messages held for MongoDB while it is slow or down; beyond it they are dropped and counted" => mongo_queue_max;
    }
    derived(get) {
        /// Redis URL (REDIS_URL, or built from REDIS_HOST, REDIS_PORT and
        /// REDIS_PASSWORD); `Some` selects replica mode.
        redis_url: Option<String> = redis_url(REDIS_URL, REDIS_HOST, REDIS_PORT.as_deref(), REDIS_PASSWORD.as_deref())?,
            show masked;
        /// REDIS_FAILOVER_HOLD_MS: how long a message waits for its Redis node;
        /// `None` (auto): derived from the deployment (see `Topology::hold`).
        redis_failover_hold: Option<Duration> = failover_hold(REDIS_FAILOVER_HOLD_MS.as_deref()),
            show |v: &Option<Duration>| v.map_or("auto".to_string(), |d| format!("{}ms", d.as_millis()));
        /// JWT verification (`AUTH_JWT_*`); `None`: anyone may connect.
        auth: Option<Verifier> = Verifier::from_env(get)?,
            show |v: &Option<Verifier>| v.as_ref().map_or("off".to_string(), Verifier::describe);
        /// Per-address limits (`MAX_CONNECTIONS_PER_IP`, `UPGRADE_RATE_PER_IP`, `UPGRADE_BURST_PER_IP`).
        peer_limits: PeerLimits = PeerLimits {
            max_connections: MAX_CONNECTIONS_PER_IP,
            upgrade_rate: UPGRADE_RATE_PER_IP,
            upgrade_burst: UPGRADE_BURST_PER_IP,
        },
            show peer::describe;
    }
}

/// Connections kept free below the open-file limit for HTTP requests,
/// Redis, MongoDB and the process's own descriptors.
const FD_RESERVE: usize = 1000;

/// The longest timeout or interval accepted (a day): the workers keep
/// deadlines as `u32` seconds since the start and compute `2 ×
/// PING_INTERVAL`, so a larger value would be truncated or overflow.
const MAX_SECS: u64 = 86_400;

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment, or a map in tests).
    /// Empty values count as unset, as Kubernetes manifests often leave them.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let get = |name: &'static str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let config = Config::read(&get)?;
        config.check()?;
        Ok(config)
    }

    /// The checks between variables.
    fn check(&self) -> Result<(), ConfigError> {
        if self.redis_url.is_some() && self.redis_cluster_nodes.is_some() {
            return Err(invalid("REDIS_CLUSTER_NODES", "set either it or REDIS_URL/REDIS_HOST, not both"));
        }
        if self.admin_port.is_some_and(|p| p != 0 && p == self.port) {
            return Err(invalid("ADMIN_PORT", "must differ from PORT"));
        }
        if self.history_on_join > self.history_ring {
            return Err(invalid("HISTORY_ON_JOIN", "must not exceed HISTORY_RING"));
        }
        if self.max_chat_bytes > self.max_message_bytes {
            return Err(invalid("MAX_CHAT_BYTES", "must not exceed MAX_MESSAGE_BYTES"));
        }
        // A chat frame is at most ~6 × MAX_CHAT_BYTES (JSON escapes a control
        // character as \u00XX) plus its other fields; a client must be able to
        // hold two of them, or one broadcast would close every member.
        let two_frames = 2 * (6 * self.max_chat_bytes + 1024);
        if self.max_outbound_bytes < two_frames {
            return Err(invalid(
                "MAX_OUTBOUND_BYTES",
                &format!("must hold two of the largest chat frames: at least {two_frames}"),
            ));
        }
        if self.pod_name.len() > 253 || self.pod_name.chars().any(|c| c.is_control()) {
            return Err(invalid("POD_NAME", "must be at most 253 printable characters"));
        }
        Ok(())
    }
}

/// REDIS_URL, or one built from REDIS_HOST, REDIS_PORT (default 6379) and
/// REDIS_PASSWORD; REDIS_PORT is only read with REDIS_HOST.
fn redis_url(
    url: Option<String>,
    host: Option<String>,
    port: Option<&str>,
    password: Option<&str>,
) -> Result<Option<String>, ConfigError> {
    Ok(match (url, host) {
        (Some(url), _) => Some(url),
        (None, Some(host)) => {
            let port: u16 = knob::Spec::read(value(6379), "REDIS_PORT", port.map(str::to_string))?;
            Some(match password {
                // Percent-encoded: a password with `@`, `/` or `:` must not end the userinfo.
                Some(pw) => format!("redis://:{}@{host}:{port}", percent_encode(pw)),
                None => format!("redis://{host}:{port}"),
            })
        }
        (None, None) => None,
    })
}

fn redis_scheme(url: &str) -> Result<(), String> {
    match url.starts_with("redis://") || url.starts_with("rediss://") {
        true => Ok(()),
        false => Err("must start with redis://".to_string()),
    }
}

/// WRITE_DUTY_PERCENT: a share of the time, so at most 100.
fn percent(v: &u32) -> Result<(), String> {
    match *v <= 100 {
        true => Ok(()),
        false => Err(format!("{v} is above the maximum 100")),
    }
}

/// The accepted range of REDIS_FAILOVER_HOLD_MS, when not `auto`.
const FAILOVER_HOLD_MS: std::ops::RangeInclusive<u64> = 100..=600_000;

fn failover_hold_rule(v: &str) -> Result<(), String> {
    match v == "auto" || v.parse::<u64>().is_ok_and(|ms| FAILOVER_HOLD_MS.contains(&ms)) {
        true => Ok(()),
        false => Err(format!("{v:?}: must be auto or between 100 and 600000 ms")),
    }
}

/// REDIS_FAILOVER_HOLD_MS (already checked by its rule): `None` for auto.
fn failover_hold(v: Option<&str>) -> Option<Duration> {
    v.and_then(|v| v.parse().ok()).map(Duration::from_millis)
}

fn cluster_nodes(nodes: &str) -> Result<(), String> {
    match nodes.split(',').map(str::trim).find(|u| !u.starts_with("redis://")) {
        Some(bad) => Err(format!("{bad:?} must start with redis://")),
        None => Ok(()),
    }
}

fn mongo_scheme(uri: &str) -> Result<(), String> {
    match uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://") {
        true => Ok(()),
        false => Err("must start with mongodb:// or mongodb+srv://".to_string()),
    }
}

/// The summary of a URL: its password masked.
fn masked(url: &Option<String>) -> String {
    url.as_deref().map_or("off".to_string(), mask_password)
}

/// The summary of REDIS_CLUSTER_NODES: each node's password masked.
fn masked_nodes(nodes: &Option<String>) -> String {
    nodes.as_deref().map_or("off".to_string(), |n| n.split(',').map(mask_password).collect::<Vec<_>>().join(","))
}

/// The summary of a password: whether it is set.
fn secret(password: &Option<String>) -> String {
    password.as_ref().map_or("off", |_| "***").to_string()
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

fn invalid(name: &'static str, reason: &str) -> ConfigError {
    ConfigError { name, reason: reason.to_string() }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn default_max_connections() -> usize {
    open_file_limit().map_or(10_000, |n| n.saturating_sub(FD_RESERVE).max(1))
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
mod tests;
