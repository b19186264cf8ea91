//! Unit tests of the configuration table and its checks.

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
    // Setting a variable to its documented default changes nothing (defaults
    // that describe a computed value, such as "available cores", aside).
    let base = format!("{:?}", config(&[("POD_NAME", "p")]).unwrap());
    let mut checked = 0;
    for var in ENV_VARS.iter().filter(|v| !v.default.is_empty() && !v.default.contains(' ')) {
        let set = config(&[("POD_NAME", "p"), (var.name, var.default)]).unwrap();
        assert_eq!(format!("{set:?}"), base, "{}={} is not the default", var.name, var.default);
        checked += 1;
    }
    assert!(checked >= 20, "{checked} defaults checked");
}

#[test]
fn readme_table_is_what_help_prints() {
    // Backticks aside (the README marks up names), each row says what
    // `--help` says: name, default and meaning.
    let readme = include_str!("../../../README.md");
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
    assert_eq!(config(&[("REDIS_FAILOVER_HOLD_MS", "50")]).unwrap_err().name, "REDIS_FAILOVER_HOLD_MS");
    assert_eq!(config(&[("REDIS_FAILOVER_HOLD_MS", "soon")]).unwrap_err().name, "REDIS_FAILOVER_HOLD_MS");
    assert_eq!(config(&[("REDIS_FAILOVER_HOLD_MS", "auto")]).unwrap().redis_failover_hold, None);
    let hold = config(&[("REDIS_FAILOVER_HOLD_MS", "8000")]).unwrap().redis_failover_hold;
    assert_eq!(hold, Some(Duration::from_millis(8000)));
    assert_eq!(config(&[("WRITE_DUTY_PERCENT", "0")]).unwrap_err().name, "WRITE_DUTY_PERCENT");
    assert_eq!(config(&[("WRITE_DUTY_PERCENT", "101")]).unwrap_err().name, "WRITE_DUTY_PERCENT");
    assert_eq!(config(&[("WRITE_DUTY_PERCENT", "100")]).unwrap().write_duty_percent, 100);
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

#[test]
fn the_summary_names_every_field_and_no_password() {
    let c = config(&[("REDIS_HOST", "r"), ("REDIS_PASSWORD", "hunter2-secret"), ("ADMIN_PORT", "9090")]).unwrap();
    let s = c.summary();
    assert!(!s.contains("hunter2-secret"), "{s}");
    for part in ["port=8080 ", "admin_port=9090 ", "redis_password=*** ", "redis_url=redis://:***@r:6379 ", "auth=off "]
    {
        assert!(s.contains(part), "{part} not in {s}");
    }
    assert!(s.contains("handshake_timeout=10s") && s.contains("allowed_origins=any"), "{s}");
}
