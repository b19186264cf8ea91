//! Query strings: `a=1&b=x%20y` decoded into UTF-8 values, and the
//! validation of the parameters the server accepts (`room`, `name`,
//! `since`, `limit`). Anything invalid is an error the caller answers with 400.

use std::borrow::Cow;

/// Longest room name.
pub const MAX_ROOM_LEN: usize = 64;
/// Longest user name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// The room used when none is given.
pub const DEFAULT_ROOM: &str = "lobby";
/// The user name used when none is given.
pub const DEFAULT_NAME: &str = "Anonymous";

/// Decodes `%XX` escapes and `+` (as a space). `None` if an escape is
/// malformed or the result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = hex(*bytes.get(i + 1)?)?;
                let lo = hex(*bytes.get(i + 2)?)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// The first value of `key` in `query`, decoded. `Err(key)` if it is malformed.
pub fn param<'q>(query: &'q str, key: &'static str) -> Result<Option<Cow<'q, str>>, BadParam> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == key {
            return percent_decode(v).map(Some).ok_or(key);
        }
    }
    Ok(None)
}

/// Whether `room` is 1–64 characters of `[A-Za-z0-9_.-]`.
pub fn valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= MAX_ROOM_LEN
        && room.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `name` is 1–32 printable characters (no control characters,
/// not only white space).
pub fn valid_name(name: &str) -> bool {
    let chars = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&chars) && !name.chars().any(char::is_control) && !name.trim().is_empty()
}

/// The parameters of a chat upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinParams {
    /// Room to join.
    pub room: String,
    /// Default user name for this connection's messages.
    pub name: String,
    /// Resume after this seq, if given.
    pub since: Option<u64>,
}

/// Which parameter was invalid (named in the 400 body).
pub type BadParam = &'static str;

/// Reads and validates `room`, `name` and `since`.
pub fn join_params(query: &str) -> Result<JoinParams, BadParam> {
    let room = param(query, "room")?.map_or(Cow::Borrowed(DEFAULT_ROOM), |r| r);
    if !valid_room(&room) {
        return Err("room");
    }
    let name = param(query, "name")?.map_or(Cow::Borrowed(DEFAULT_NAME), |n| n);
    if !valid_name(&name) {
        return Err("name");
    }
    let since = match param(query, "since")? {
        None => None,
        Some(s) => Some(s.parse::<u64>().map_err(|_| "since")?),
    };
    Ok(JoinParams { room: room.into_owned(), name: name.into_owned(), since })
}

/// Reads `room` (required to be valid, default `lobby`) and `limit`
/// (1.., default 100, at most 1000) for `/history`.
pub fn history_params(query: &str) -> Result<(String, usize), BadParam> {
    let room = param(query, "room")?.map_or(Cow::Borrowed(DEFAULT_ROOM), |r| r);
    if !valid_room(&room) {
        return Err("room");
    }
    let limit = match param(query, "limit")? {
        None => 100,
        Some(s) => s.parse::<usize>().ok().filter(|&n| n >= 1).ok_or("limit")?.min(1000),
    };
    Ok((room.into_owned(), limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_plus() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%E2%82%AC").as_deref(), Some("€"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
    }

    #[test]
    fn join_defaults_and_validation() {
        assert_eq!(
            join_params("").unwrap(),
            JoinParams { room: "lobby".into(), name: "Anonymous".into(), since: None }
        );
        assert_eq!(
            join_params("room=dev-1.x&name=Ana%20B&since=42").unwrap(),
            JoinParams { room: "dev-1.x".into(), name: "Ana B".into(), since: Some(42) }
        );
        assert_eq!(join_params("room=").unwrap_err(), "room");
        assert_eq!(join_params("room=a%2Fb").unwrap_err(), "room");
        assert_eq!(join_params(&format!("room={}", "a".repeat(65))).unwrap_err(), "room");
        assert!(join_params(&format!("room={}", "a".repeat(64))).is_ok());
        assert_eq!(join_params("name=").unwrap_err(), "name");
        assert_eq!(join_params("name=%20%20").unwrap_err(), "name");
        assert_eq!(join_params("name=a%0Ab").unwrap_err(), "name");
        assert_eq!(join_params(&format!("name={}", "é".repeat(33))).unwrap_err(), "name");
        assert!(join_params(&format!("name={}", "é".repeat(32))).is_ok());
        assert_eq!(join_params("since=-1").unwrap_err(), "since");
        assert_eq!(join_params("since=x").unwrap_err(), "since");
    }

    #[test]
    fn history_limit_defaults_and_clamps() {
        assert_eq!(history_params("").unwrap(), ("lobby".to_string(), 100));
        assert_eq!(history_params("room=r&limit=5000").unwrap(), ("r".to_string(), 1000));
        assert_eq!(history_params("limit=0").unwrap_err(), "limit");
        assert_eq!(history_params("limit=many").unwrap_err(), "limit");
    }
}
