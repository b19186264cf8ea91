//! Configuration: the original load test's environment variables (same
//! names, meanings and defaults), the same settings as flags (flags win),
//! connflood's own flags, and `--help`. Parsing is pure: it takes the
//! arguments and an environment lookup, so precedence is unit-tested.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use crate::url::{valid_room, WsUrl};

/// Everything one run needs, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Target URLs; connections are spread over them round-robin.
    pub urls: Vec<WsUrl>,
    /// Connections to hold.
    pub connections: usize,
    /// Time over which the connections are opened, evenly.
    pub ramp_up: Duration,
    /// Sending time after the ramp ends.
    pub duration: Duration,
    /// Time between two messages of one sending connection.
    pub msg_interval: Duration,
    /// Rooms the connections are spread over.
    pub rooms: usize,
    /// Room names are `{room_prefix}-{i}` (or exactly the prefix for one room
    /// given by the URL's `room`).
    pub room_prefix: String,
    /// Whether the single room's name is the prefix itself (from the URL).
    pub room_exact: bool,
    /// How many connections send (the first `senders` connection indexes).
    pub senders: usize,
    /// Size of the chat `message` text in bytes (at least the marker).
    pub payload: usize,
    /// Source addresses to bind, spread over the connections (empty: any).
    pub binds: Vec<IpAddr>,
    /// Where to write the JSON report.
    pub json: Option<PathBuf>,
    /// Time after the last send before deliveries are judged.
    pub settle: Duration,
    /// No progress lines.
    pub quiet: bool,
    /// Error frames answering our messages do not fail the run.
    pub allow_rejects: bool,
    /// Consecutive failed attempts after which a connection gives up.
    pub max_retries: u32,
    /// Time between progress lines.
    pub status_every: Duration,
    /// Limit for the TCP connect and, separately, for the upgrade response.
    pub connect_timeout: Duration,
    /// Seed of the random choices (keys, masks, phases, jitter); random by default.
    pub seed: Option<u64>,
    /// With a server's `AUTH_JWT_SECRET`: every attempt carries a fresh HS256 token.
    pub token_secret: Option<String>,
    /// Lifetime of those tokens (the server closes with 4001 at their `exp`).
    pub token_ttl: Duration,
    /// Offer permessage-deflate (RFC 7692) and send compressed messages where negotiated.
    pub deflate: bool,
    /// Sending stops early once this file exists (a test's own end of the
    /// sending time, `duration` being the latest).
    pub stop_file: Option<PathBuf>,
}

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Run the load test.
    Run(Box<Config>),
    /// Print the help text.
    Help,
}

/// A usage error (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Flags that take a value.
const VALUE_FLAGS: &[&str] = &[
    "--url",
    "--connections",
    "--ramp-up",
    "--duration",
    "--msg-interval",
    "--rooms",
    "--room-prefix",
    "--senders",
    "--payload",
    "--bind",
    "--json",
    "--settle",
    "--max-retries",
    "--status-every",
    "--connect-timeout",
    "--seed",
    "--token-secret",
    "--token-ttl",
    "--stop-file",
];

/// Flags without a value.
const SWITCHES: &[&str] = &["--quiet", "--allow-rejects", "--deflate", "--help"];

/// The most source addresses a `--bind` may name.
const MAX_BINDS: usize = 4096;

/// Parses `args` (without the program name) with `env` for the environment.
pub fn parse(args: &[String], env: impl Fn(&str) -> Option<String>) -> Result<Command, UsageError> {
    let mut flags: Vec<(&str, Option<String>)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        if arg == "-h" {
            return Ok(Command::Help);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (arg, None),
        };
        if let Some(&flag) = VALUE_FLAGS.iter().find(|f| **f == name) {
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i).cloned().ok_or_else(|| UsageError(format!("{flag} needs a value")))?
                }
            };
            flags.push((flag, Some(value)));
        } else if let Some(&switch) = SWITCHES.iter().find(|f| **f == name) {
            if inline.is_some() {
                return Err(UsageError(format!("{switch} takes no value")));
            }
            if switch == "--help" {
                return Ok(Command::Help);
            }
            flags.push((switch, None));
        } else {
            return Err(UsageError(format!("unknown argument {arg:?}")));
        }
        i += 1;
    }

    // The last occurrence of a flag wins, except --url which accumulates.
    let last = |name: &str| flags.iter().rev().find(|(n, _)| *n == name).and_then(|(_, v)| v.clone());
    let has = |name: &str| flags.iter().any(|(n, _)| *n == name);
    // Flag first, then the environment variable, then the default.
    let setting = |flag: &str, var: &str, default: &str| -> (String, String) {
        match last(flag) {
            Some(v) => (v, flag.to_string()),
            None => match env(var).filter(|v| !v.trim().is_empty()) {
                Some(v) => (v, var.to_string()),
                None => (default.to_string(), flag.to_string()),
            },
        }
    };

    let url_flags: Vec<&str> = flags.iter().filter(|(n, _)| *n == "--url").filter_map(|(_, v)| v.as_deref()).collect();
    let urls = if url_flags.is_empty() {
        let (v, _) = setting("--url", "WS_URL", "ws://localhost:30080");
        WsUrl::parse_list(&v)
    } else {
        WsUrl::parse_list(&url_flags.join(","))
    }
    .map_err(|e| UsageError(e.to_string()))?;

    let (v, from) = setting("--connections", "CONNECTIONS", "10000");
    let connections = int(&v, &from, 1, 10_000_000)? as usize;
    let (v, from) = setting("--ramp-up", "RAMP_UP", "60");
    let ramp_up = secs(&v, &from)?;
    let (v, from) = setting("--duration", "DURATION", "300");
    let duration = secs(&v, &from)?;
    let (v, from) = setting("--msg-interval", "MSG_INTERVAL", "10000");
    let msg_interval = millis(&v, &from)?;
    if msg_interval.is_zero() {
        return Err(UsageError(format!("{from} must be more than 0 ms")));
    }

    let rooms = match last("--rooms") {
        Some(v) => int(&v, "--rooms", 1, 1_000_000)? as usize,
        None => 1,
    };
    let (room_prefix, room_exact) = match (last("--room-prefix"), urls[0].room.clone()) {
        (Some(p), _) => (p, false),
        (None, Some(r)) => (r, rooms == 1),
        (None, None) => ("cf".to_string(), false),
    };
    let longest = if room_exact { room_prefix.clone() } else { format!("{room_prefix}-{}", rooms - 1) };
    if !valid_room(&longest) {
        return Err(UsageError(format!("room names like {longest:?} are not valid (1-64 of A-Z a-z 0-9 _ . -)")));
    }
    let senders = match last("--senders") {
        Some(v) => int(&v, "--senders", 0, u64::MAX)? as usize,
        None => connections,
    };
    if senders > connections {
        return Err(UsageError(format!("--senders {senders} is more than --connections {connections}")));
    }
    let payload = match last("--payload") {
        Some(v) => int(&v, "--payload", 1, 1 << 20)? as usize,
        None => 64,
    };
    let binds = match last("--bind") {
        Some(v) => parse_binds(&v)?,
        None => Vec::new(),
    };
    let json = last("--json").map(PathBuf::from);
    let stop_file = last("--stop-file").map(PathBuf::from);
    let settle = match last("--settle") {
        Some(v) => secs(&v, "--settle")?,
        None => Duration::from_secs(5),
    };
    let max_retries = match last("--max-retries") {
        Some(v) => int(&v, "--max-retries", 1, 1000)? as u32,
        None => 10,
    };
    let status_every = match last("--status-every") {
        Some(v) => secs(&v, "--status-every")?,
        None => Duration::from_secs(5),
    };
    if status_every < Duration::from_millis(100) {
        return Err(UsageError("--status-every must be at least 0.1 s".into()));
    }
    let connect_timeout = match last("--connect-timeout") {
        Some(v) => secs(&v, "--connect-timeout")?,
        None => Duration::from_secs(10),
    };
    if connect_timeout < Duration::from_millis(10) {
        return Err(UsageError("--connect-timeout must be at least 0.01 s".into()));
    }
    let seed = match last("--seed") {
        Some(v) => Some(int(&v, "--seed", 0, u64::MAX)?),
        None => None,
    };
    let token_secret = last("--token-secret").or_else(|| env("TOKEN_SECRET")).filter(|s| !s.is_empty());
    let token_ttl = match last("--token-ttl") {
        Some(v) => secs(&v, "--token-ttl")?,
        None => Duration::from_secs(60),
    };
    if token_ttl < Duration::from_secs(2) {
        return Err(UsageError("--token-ttl must be at least 2 s".into()));
    }

    Ok(Command::Run(Box::new(Config {
        urls,
        connections,
        ramp_up,
        duration,
        msg_interval,
        rooms,
        room_prefix,
        room_exact,
        senders,
        payload,
        binds,
        json,
        settle,
        quiet: has("--quiet"),
        allow_rejects: has("--allow-rejects"),
        deflate: has("--deflate"),
        max_retries,
        status_every,
        connect_timeout,
        seed,
        token_secret,
        token_ttl,
        stop_file,
    })))
}

impl Config {
    /// The name of room `i`.
    pub fn room_name(&self, i: usize) -> String {
        if self.room_exact {
            self.room_prefix.clone()
        } else {
            format!("{}-{i}", self.room_prefix)
        }
    }

    /// The latest moment anything may still run, from the start: ramp +
    /// duration + settle + 30 s.
    pub fn hard_deadline(&self) -> Duration {
        self.ramp_up + self.duration + self.settle + Duration::from_secs(30)
    }
}

fn int(v: &str, from: &str, min: u64, max: u64) -> Result<u64, UsageError> {
    match v.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        Ok(_) => Err(UsageError(format!("{from} must be from {min} to {max}, not {v:?}"))),
        Err(_) => Err(UsageError(format!("{from} must be a whole number, not {v:?}"))),
    }
}

fn number(v: &str, from: &str, unit: &str) -> Result<f64, UsageError> {
    match v.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=1e9).contains(&x) => Ok(x),
        _ => Err(UsageError(format!("{from} must be a number of {unit} (0 or more), not {v:?}"))),
    }
}

fn secs(v: &str, from: &str) -> Result<Duration, UsageError> {
    number(v, from, "seconds").map(Duration::from_secs_f64)
}

fn millis(v: &str, from: &str) -> Result<Duration, UsageError> {
    number(v, from, "milliseconds").map(|ms| Duration::from_secs_f64(ms / 1000.0))
}

/// Parses `--bind`: a comma list of addresses and inclusive IPv4 ranges
/// (`127.0.0.1-127.0.0.20`, or `127.0.0.1-20` for the last octet).
pub fn parse_binds(spec: &str) -> Result<Vec<IpAddr>, UsageError> {
    let bad = |part: &str| UsageError(format!("--bind: {part:?} is not an address or an a.b.c.d-e.f.g.h range"));
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Ok(ip) = part.parse::<IpAddr>() {
            out.push(ip);
            continue;
        }
        let (a, b) = part.split_once('-').ok_or_else(|| bad(part))?;
        let first: Ipv4Addr = a.trim().parse().map_err(|_| bad(part))?;
        let last: Ipv4Addr = match b.trim().parse::<Ipv4Addr>() {
            Ok(ip) => ip,
            Err(_) => {
                let octet: u8 = b.trim().parse().map_err(|_| bad(part))?;
                let o = first.octets();
                Ipv4Addr::new(o[0], o[1], o[2], octet)
            }
        };
        let (lo, hi) = (u32::from(first), u32::from(last));
        if hi < lo {
            return Err(UsageError(format!("--bind: range {part:?} ends before it starts")));
        }
        if (hi - lo) as usize >= MAX_BINDS {
            return Err(UsageError(format!("--bind: range {part:?} has more than {MAX_BINDS} addresses")));
        }
        out.extend((lo..=hi).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
    }
    if out.is_empty() {
        return Err(UsageError("--bind names no address".into()));
    }
    if out.len() > MAX_BINDS {
        return Err(UsageError(format!("--bind names more than {MAX_BINDS} addresses")));
    }
    if out.iter().any(|a| a.is_ipv4()) && out.iter().any(|a| a.is_ipv6()) {
        return Err(UsageError("--bind mixes IPv4 and IPv6 addresses".into()));
    }
    Ok(out)
}

/// The `--help` text.
pub fn help() -> String {
    r#"connflood: WebSocket load generator and delivery checker for websocket-server

One single-threaded event loop holds every connection (non-blocking connects,
slab-indexed state), sends chat messages, and checks that every connection sees
its room's messages in seq order with no gap and no duplicate, across reconnects.

USAGE: connflood [FLAGS]        (cargo run --release -p connflood -- [FLAGS])

The original load test's variables (a flag overrides its variable):
  --url URL          WS_URL        target ws://host[:port][/path][?query]   [ws://localhost:30080]
                                   (repeat --url, or separate with commas, for
                                   several targets: connections go round-robin)
  --connections N    CONNECTIONS   connections to hold                      [10000]
  --ramp-up SECS     RAMP_UP       open them evenly over SECS               [60]
  --duration SECS    DURATION      sending time after the ramp ends         [300]
                                   (a connection sends from the moment it is
                                   open, so during the ramp too)
  --msg-interval MS  MSG_INTERVAL  ms between a connection's messages       [10000]
                                   (the first at a random phase)

More:
  --rooms N            spread connections over rooms cf-0..cf-{N-1}        [1]
                       (a room= in the URL replaces the prefix "cf"; with
                       one room it is that room's exact name)
  --room-prefix P      room names P-0..P-{N-1}                             [cf]
  --senders N          how many connections send: the first N, which
                       cover the rooms evenly                              [all]
  --payload BYTES      size of each message text, at least its ~40-byte
                       marker cf|tag|conn|n|send-micros|                   [64]
  --bind SPEC          source addresses spread over the connections, e.g.
                       127.0.0.1-127.0.0.20 or 127.0.0.2,127.0.0.3         [any]
  --settle SECS        after sending stops, wait for deliveries in flight
                       before judging                                      [5]
  --max-retries N      consecutive failed attempts (refused, timeout,
                       non-101, closed before the join) before giving up   [10]
  --allow-rejects      error frames answering our messages (rate_limited,
                       too_long, ...) do not fail the run
  --deflate            offer permessage-deflate (as browsers do), send
                       compressed messages where the server agrees; the
                       report gives chat bytes on the wire per delivery
  --json FILE          also write the report as JSON (keys: docs/connflood.md)
  --stop-file PATH     sending stops early once PATH exists (looked for
                       every 0.1-0.25 s; settle, verdict and closes follow
                       as usual): a script ends the sending time when what
                       it waits for happened, DURATION being the latest
  --quiet              no progress lines
  --status-every SECS  time between progress lines                         [5]
  --connect-timeout S  limit for the TCP connect, for the 101, and for
                       the join frame after it                             [10]
  --seed N             fixed seed for keys, masks, phases, jitter          [random]
  --token-secret S     the server's AUTH_JWT_SECRET (or TOKEN_SECRET): each
                       connection attempt carries a fresh HS256 token with
                       the connection's own sub; at its exp the server
                       closes (4001) and the connection resumes with a new one
  --token-ttl SECS     lifetime of those tokens                            [60]
  -h, --help           this text

Reconnects: after a close or an error a connection reconnects with exponential
backoff (100 ms doubling to 5 s, +-50 % jitter; Retry-After is honoured) and
resumes with since=<last seq it saw>. With several URLs, each failed attempt
moves the connection's next attempt to the next URL (failover).

Timeline: ramp, then DURATION of sending, then --settle, then every connection
is closed with 1000 and the report printed. Everything stops by itself at the
latest at ramp + duration + settle + 30 s.

Exit status: 0 when every connection was made and is open at the end, and no
message was lost, duplicated or reordered (nor rejected unless --allow-rejects)
and the server broke no protocol rule; 1 otherwise; 2 for usage errors.

Several processes can share the rooms (each holds at most its open-file limit
of sockets); give each its own --bind range.

connflood mint-token --secret S [...] prints one token (connflood mint-token --help)."#
        .to_string()
}

/// A configuration from command-line arguments only (no environment), for
/// the unit tests of the modules that take a [`Config`].
#[cfg(test)]
pub fn from_args(args: &[&str]) -> Config {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    match parse(&args, |_| None) {
        Ok(Command::Run(c)) => *c,
        other => panic!("{args:?} is not a run configuration: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, UsageError> {
        let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match parse(&args, |k| map.get(k).cloned())? {
            Command::Run(c) => Ok(*c),
            Command::Help => panic!("help"),
        }
    }

    #[test]
    fn defaults_are_the_originals() {
        let c = run(&[], &[]).unwrap();
        assert_eq!(c.urls, vec![WsUrl::parse("ws://localhost:30080").unwrap()]);
        assert_eq!(c.connections, 10_000);
        assert_eq!(c.ramp_up, Duration::from_secs(60));
        assert_eq!(c.duration, Duration::from_secs(300));
        assert_eq!(c.msg_interval, Duration::from_millis(10_000));
        assert_eq!((c.rooms, c.senders, c.payload, c.max_retries), (1, 10_000, 64, 10));
        assert_eq!(c.settle, Duration::from_secs(5));
        assert!(c.binds.is_empty() && c.json.is_none() && !c.quiet && !c.allow_rejects);
        assert_eq!(c.room_name(0), "cf-0");
        assert_eq!(c.hard_deadline(), Duration::from_secs(60 + 300 + 5 + 30));
    }

    #[test]
    fn environment_is_read_and_flags_override_it() {
        let env = [
            ("WS_URL", "ws://127.0.0.1:9/"),
            ("CONNECTIONS", "50"),
            ("RAMP_UP", "2"),
            ("DURATION", "3"),
            ("MSG_INTERVAL", "250"),
        ];
        let c = run(&[], &env).unwrap();
        assert_eq!((c.urls[0].port, c.connections), (9, 50));
        assert_eq!((c.ramp_up, c.duration, c.msg_interval), (secs_(2), secs_(3), Duration::from_millis(250)));
        let c = run(
            &[
                "--url",
                "ws://127.0.0.1:8",
                "--connections=7",
                "--ramp-up",
                "0.5",
                "--duration",
                "1",
                "--msg-interval=100",
            ],
            &env,
        )
        .unwrap();
        assert_eq!((c.urls[0].port, c.connections), (8, 7));
        assert_eq!((c.ramp_up, c.duration, c.msg_interval), (Duration::from_millis(500), secs_(1), ms(100)));
        // One flag overrides only its own variable.
        let c = run(&["--connections", "3"], &env).unwrap();
        assert_eq!((c.connections, c.duration), (3, secs_(3)));
        // An empty variable counts as unset.
        assert_eq!(run(&[], &[("CONNECTIONS", "")]).unwrap().connections, 10_000);
        // A bad variable is a usage error naming it.
        assert!(run(&[], &[("CONNECTIONS", "many")]).unwrap_err().0.contains("CONNECTIONS"));
        // ...unless the flag replaces it.
        assert_eq!(run(&["--connections", "4"], &[("CONNECTIONS", "many")]).unwrap().connections, 4);
    }

    fn secs_(n: u64) -> Duration {
        Duration::from_secs(n)
    }
    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn stop_file_is_optional() {
        assert_eq!(run(&[], &[]).unwrap().stop_file, None);
        let c = run(&["--stop-file", "/tmp/stop"], &[]).unwrap();
        assert_eq!(c.stop_file.as_deref(), Some(std::path::Path::new("/tmp/stop")));
        assert!(run(&["--stop-file"], &[]).is_err());
    }

    #[test]
    fn several_urls() {
        let c = run(&["--url", "ws://a:1,ws://b:2", "--url=ws://c:3"], &[("WS_URL", "ws://z:9")]).unwrap();
        assert_eq!(c.urls.iter().map(|u| u.port).collect::<Vec<_>>(), [1, 2, 3]);
        let c = run(&[], &[("WS_URL", "ws://a:1, ws://b:2")]).unwrap();
        assert_eq!(c.urls.len(), 2);
    }

    #[test]
    fn rooms_and_prefixes() {
        let c = run(&["--rooms", "10"], &[]).unwrap();
        assert_eq!((c.room_name(0), c.room_name(9)), ("cf-0".into(), "cf-9".into()));
        let c = run(&["--url", "ws://h:1/?room=lobby"], &[]).unwrap();
        assert_eq!(c.room_name(0), "lobby");
        let c = run(&["--url", "ws://h:1/?room=load", "--rooms", "3"], &[]).unwrap();
        assert_eq!(c.room_name(2), "load-2");
        let c = run(&["--room-prefix", "x", "--rooms", "2"], &[]).unwrap();
        assert_eq!(c.room_name(1), "x-1");
        assert!(run(&["--room-prefix", "bad prefix"], &[]).is_err());
        assert!(run(&["--room-prefix", &"p".repeat(62), "--rooms", "100"], &[]).is_err());
        assert!(run(&["--rooms", "0"], &[]).is_err());
    }

    #[test]
    fn other_flags() {
        let c = run(
            &[
                "--connections",
                "100",
                "--senders",
                "10",
                "--payload",
                "200",
                "--bind",
                "127.0.0.1-127.0.0.3",
                "--json",
                "/tmp/x.json",
                "--settle",
                "2",
                "--quiet",
                "--allow-rejects",
                "--max-retries",
                "2",
                "--seed",
                "42",
                "--status-every",
                "1",
                "--connect-timeout",
                "0.5",
            ],
            &[],
        )
        .unwrap();
        assert_eq!((c.senders, c.payload, c.binds.len(), c.max_retries, c.seed), (10, 200, 3, 2, Some(42)));
        assert_eq!(c.json, Some(PathBuf::from("/tmp/x.json")));
        assert!(c.quiet && c.allow_rejects);
        assert_eq!((c.settle, c.status_every, c.connect_timeout), (secs_(2), secs_(1), ms(500)));
        assert_eq!(run(&["--senders", "0", "--connections", "5"], &[]).unwrap().senders, 0);
    }

    #[test]
    fn usage_errors() {
        for bad in [
            &["--nope"][..],
            &["--connections"],
            &["--connections", "0"],
            &["--connections", "-5"],
            &["--ramp-up", "x"],
            &["--duration", "-1"],
            &["--msg-interval", "0"],
            &["--connections", "5", "--senders", "6"],
            &["--payload", "0"],
            &["--bind", "nowhere"],
            &["--url", "wss://x"],
            &["--quiet=1"],
            &["--max-retries", "0"],
            &["positional"],
        ] {
            assert!(run(bad, &[]).is_err(), "{bad:?}");
        }
        let args = vec!["--help".to_string()];
        assert_eq!(parse(&args, |_| None), Ok(Command::Help));
        assert_eq!(parse(&["-h".to_string()], |_| None), Ok(Command::Help));
    }

    #[test]
    fn bind_specs() {
        let ips = |s: &str| parse_binds(s).unwrap().iter().map(|a| a.to_string()).collect::<Vec<_>>();
        assert_eq!(ips("127.0.0.1-127.0.0.3"), ["127.0.0.1", "127.0.0.2", "127.0.0.3"]);
        assert_eq!(ips("127.0.0.9-10, 127.0.1.1"), ["127.0.0.9", "127.0.0.10", "127.0.1.1"]);
        assert_eq!(ips("127.0.0.255-127.0.1.0"), ["127.0.0.255", "127.0.1.0"]);
        assert_eq!(ips("::1"), ["::1"]);
        assert!(parse_binds("127.0.0.5-127.0.0.1").is_err());
        assert!(parse_binds("127.0.0.1-300").is_err());
        assert!(parse_binds("10.0.0.0-10.255.255.255").is_err());
        assert!(parse_binds("127.0.0.1,::1").is_err());
        assert!(parse_binds(",").is_err());
    }

    /// The original's variables: name, flag, default.
    const ENV_VARS: &[(&str, &str, &str)] = &[
        ("WS_URL", "--url", "ws://localhost:30080"),
        ("CONNECTIONS", "--connections", "10000"),
        ("RAMP_UP", "--ramp-up", "60"),
        ("DURATION", "--duration", "300"),
        ("MSG_INTERVAL", "--msg-interval", "10000"),
    ];

    #[test]
    fn help_mentions_every_flag_and_variable() {
        let h = help();
        for flag in VALUE_FLAGS.iter().chain(SWITCHES) {
            assert!(h.contains(flag), "{flag}");
        }
        for (var, flag, default) in ENV_VARS {
            let line = h.lines().find(|l| l.contains(var)).unwrap_or_else(|| panic!("{var}"));
            assert!(line.contains(flag) && line.contains(&format!("[{default}]")), "{line}");
        }
    }
}
