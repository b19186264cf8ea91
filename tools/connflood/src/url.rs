//! `ws://` URLs: parsed by hand (no TLS, no user info), resolved once at
//! start-up. The query parameters connflood controls per connection
//! (`room`, `name`, `since`) are taken out of the URL's query; a `room`
//! given in the URL becomes the room (or room prefix) to use.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

/// A parsed `ws://host[:port][/path][?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// The host as written, IPv6 literals with their brackets (for `Host:`).
    pub host: String,
    /// The port (80 when the URL has none).
    pub port: u16,
    /// Whether the URL named the port (then `Host:` carries it).
    pub explicit_port: bool,
    /// The path, starting with `/`.
    pub path: String,
    /// The query without `?` and without `room`, `name`, `since` (may be empty).
    pub query: String,
    /// The `room` parameter of the URL, if it had one.
    pub room: Option<String>,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl WsUrl {
    /// Parses one URL.
    pub fn parse(text: &str) -> Result<WsUrl, UrlError> {
        let err = |why: &str| Err(UrlError(format!("invalid URL {text:?}: {why}")));
        let text_trim = text.trim();
        let Some(colon) = text_trim.find("://") else {
            return err("expected ws://host[:port][/path][?query]");
        };
        let scheme = text_trim[..colon].to_ascii_lowercase();
        match scheme.as_str() {
            "ws" => {}
            "wss" => return err("wss:// (TLS) is not supported; terminate TLS elsewhere and use ws://"),
            _ => return err("the scheme must be ws://"),
        }
        let rest = &text_trim[colon + 3..];
        // Drop a fragment: it is never sent.
        let rest = rest.split('#').next().unwrap_or("");
        let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(auth_end);
        if authority.contains('@') {
            return err("user info is not supported");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let Some(close) = v6.find(']') else { return err("unclosed [ in host") };
            let host = &authority[..close + 2];
            let after = &v6[close + 1..];
            match after.strip_prefix(':') {
                Some(p) => (host, Some(p)),
                None if after.is_empty() => (host, None),
                None => return err("unexpected text after ]"),
            }
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() || host == "[]" {
            return err("no host");
        }
        if !host.chars().all(|c| c.is_ascii_alphanumeric() || "-._:[]%".contains(c)) {
            return err("the host has characters a host name cannot have");
        }
        let (port, explicit_port) = match port {
            None => (80, false),
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => (n, true),
                _ => return err("the port must be a number from 1 to 65535"),
            },
        };
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, q),
            None => (tail, ""),
        };
        let path = if path.is_empty() { "/".to_string() } else { path.to_string() };
        if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return err("the path has spaces or control characters");
        }
        if query.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return err("the query has spaces or control characters");
        }
        let mut room = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let key = pair.split('=').next().unwrap_or("");
            match key {
                "room" => room = Some(pair[key.len()..].trim_start_matches('=').to_string()),
                "name" | "since" => {}
                _ => kept.push(pair),
            }
        }
        if let Some(r) = &room {
            if !valid_room(r) {
                return err("room must be 1-64 of A-Z a-z 0-9 _ . -");
            }
        }
        Ok(WsUrl { host: host.to_string(), port, explicit_port, path, query: kept.join("&"), room })
    }

    /// Parses a comma-separated list of URLs (at least one).
    pub fn parse_list(text: &str) -> Result<Vec<WsUrl>, UrlError> {
        let urls: Result<Vec<_>, _> =
            text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(WsUrl::parse).collect();
        let urls = urls?;
        if urls.is_empty() {
            return Err(UrlError(format!("no URL in {text:?}")));
        }
        Ok(urls)
    }

    /// The `Host:` header value.
    pub fn host_header(&self) -> String {
        if self.explicit_port && self.port != 80 {
            format!("{}:{}", self.host, self.port)
        } else {
            self.host.clone()
        }
    }

    /// Resolves the host once, preferring an address of the family of
    /// `want_v4` (IPv4 when true), since the server listens on IPv4 by default.
    pub fn resolve(&self, want_v4: bool) -> Result<SocketAddr, UrlError> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (host, self.port)
            .to_socket_addrs()
            .map_err(|e| UrlError(format!("cannot resolve {}: {e}", self.host)))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4() == want_v4)
            .or(addrs.first())
            .copied()
            .ok_or_else(|| UrlError(format!("{} resolves to no address", self.host)))
    }
}

impl fmt::Display for WsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ws://{}:{}{}", self.host, self.port, self.path)?;
        if !self.query.is_empty() {
            write!(f, "?{}", self.query)?;
        }
        Ok(())
    }
}

/// Whether `name` is a room name the server accepts: 1–64 of `[A-Za-z0-9_.-]`
/// (the server's own check).
pub use websocket_server::http::query::valid_room;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_full_form() {
        let u = WsUrl::parse("ws://localhost:30080").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.path.as_str(), u.query.as_str()), ("localhost", 30080, "/", ""));
        assert_eq!(u.host_header(), "localhost:30080");
        let u = WsUrl::parse("WS://example.test/ws?x=1&room=abc&name=bob&since=4&y#frag").unwrap();
        assert_eq!((u.port, u.explicit_port), (80, false));
        assert_eq!(u.path, "/ws");
        assert_eq!(u.query, "x=1&y");
        assert_eq!(u.room.as_deref(), Some("abc"));
        assert_eq!(u.host_header(), "example.test");
        assert_eq!(u.to_string(), "ws://example.test:80/ws?x=1&y");
    }

    #[test]
    fn ipv6_literal() {
        let u = WsUrl::parse("ws://[::1]:9000/ws").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("[::1]", 9000));
        assert_eq!(u.host_header(), "[::1]:9000");
        assert_eq!(u.resolve(false).unwrap(), "[::1]:9000".parse().unwrap());
        assert_eq!(WsUrl::parse("ws://[::1]").unwrap().port, 80);
    }

    #[test]
    fn query_without_path() {
        let u = WsUrl::parse("ws://127.0.0.1:1?room=r1").unwrap();
        assert_eq!((u.path.as_str(), u.room.as_deref(), u.query.as_str()), ("/", Some("r1"), ""));
    }

    #[test]
    fn refusals() {
        for bad in [
            "http://x",
            "wss://x",
            "x:80",
            "ws://",
            "ws://:80",
            "ws://h:0",
            "ws://h:70000",
            "ws://h:p",
            "ws://u@h",
            "ws://[::1",
            "ws://[::1]x",
            "ws://h/a b",
            "ws://h/?room=bad room",
            "ws://h/?room=",
            "ws://h/?room=a/b",
        ] {
            assert!(WsUrl::parse(bad).is_err(), "{bad}");
        }
        assert!(WsUrl::parse("wss://x").unwrap_err().0.contains("TLS"));
    }

    #[test]
    fn lists() {
        let l = WsUrl::parse_list("ws://a:1, ws://b:2,,").unwrap();
        assert_eq!(l.iter().map(|u| u.port).collect::<Vec<_>>(), [1, 2]);
        assert!(WsUrl::parse_list(" , ").is_err());
        assert!(WsUrl::parse_list("ws://a:1,wss://b").is_err());
    }

    #[test]
    fn resolves_localhost_to_ipv4_first() {
        let a = WsUrl::parse("ws://localhost:1234").unwrap().resolve(true).unwrap();
        assert_eq!(a, "127.0.0.1:1234".parse().unwrap());
    }

    #[test]
    fn room_names() {
        assert!(valid_room("cf-0") && valid_room("A.b_c-9") && valid_room(&"x".repeat(64)));
        assert!(!valid_room("") && !valid_room(&"x".repeat(65)) && !valid_room("a b") && !valid_room("é"));
    }
}
