//! JWTs for servers with authentication on (`AUTH_JWT_SECRET`): `--token-secret`
//! mints a short-lived HS256 token for every connection attempt, with the
//! connection's own `sub` (its user name), so a reconnect after the server's
//! 4001 close at `exp` carries a fresh one; `connflood mint-token` prints
//! one token for manual tests (curl, websocat, the chat page's `#token=`).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

use crate::config::UsageError;

/// What goes into a token.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Claims {
    /// `sub`: the user id.
    pub sub: String,
    /// `name`, if not the `sub`.
    pub name: Option<String>,
    /// Seconds from now to `exp`.
    pub ttl_secs: u64,
    /// `exp` itself, in place of now + `ttl_secs`.
    pub exp: Option<u64>,
    /// `rooms` (names, `prefix*`), if limited.
    pub rooms: Option<Vec<String>>,
    /// `iss`.
    pub iss: Option<String>,
    /// `aud`.
    pub aud: Option<String>,
}

/// An HS256 token for `claims`, signed with `secret`, valid from now.
pub fn mint(secret: &[u8], claims: &Claims) -> String {
    let now = unix_now();
    let mut body = Map::new();
    body.insert("sub".into(), json!(claims.sub));
    body.insert("iat".into(), json!(now));
    body.insert("exp".into(), json!(claims.exp.unwrap_or(now + claims.ttl_secs)));
    if let Some(n) = &claims.name {
        body.insert("name".into(), json!(n));
    }
    if let Some(r) = &claims.rooms {
        body.insert("rooms".into(), json!(r));
    }
    if let Some(i) = &claims.iss {
        body.insert("iss".into(), json!(i));
    }
    if let Some(a) = &claims.aud {
        body.insert("aud".into(), json!(a));
    }
    // Encoding an in-memory JSON object with an HMAC key cannot fail.
    encode(&Header::new(Algorithm::HS256), &Value::Object(body), &EncodingKey::from_secret(secret)).unwrap_or_default()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The `exp` of a token minted at `now` with `ttl`, kept out of the
/// moments around `judge` (when deliveries are judged and every connection
/// must be open): the server closes within a second after `exp`, and a
/// reconnect takes a fraction of a second, so an `exp` in
/// `[judge - 3, judge + 1]` is moved to `judge + 2` (a token minted just
/// before the end lasts until after it).
pub fn expiry(now: u64, ttl: u64, judge: u64) -> u64 {
    let exp = now + ttl;
    if exp + 3 >= judge && exp <= judge + 1 {
        judge + 2
    } else {
        exp
    }
}

/// The `mint-token` help text.
pub fn help() -> &'static str {
    r#"connflood mint-token: print an HS256 JWT for a server with AUTH_JWT_SECRET

USAGE: connflood mint-token --secret S [--sub ID] [--name N] [--ttl SECS]
                            [--rooms a,team-*] [--iss I] [--aud A]

  --secret S    the server's AUTH_JWT_SECRET (or TOKEN_SECRET in the environment)
  --sub ID      user id                                            [tester]
  --name N      chat name (default: the sub)
  --ttl SECS    seconds until exp                                  [3600]
  --rooms LIST  rooms the token grants, comma-separated; a trailing *
                is a prefix                                        [all rooms]
  --iss I, --aud A   issuer and audience, when the server checks them

Example: websocat "ws://127.0.0.1:8080/ws?room=lobby&token=$(connflood mint-token --secret "$S")""#
}

/// Parses `mint-token`'s arguments; `None` for `--help`.
pub fn parse_mint(
    args: &[String],
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<(String, Claims)>, UsageError> {
    let mut claims = Claims { sub: "tester".into(), ttl_secs: 3600, ..Claims::default() };
    let mut secret = env("TOKEN_SECRET").filter(|s| !s.is_empty());
    let mut i = 0;
    while i < args.len() {
        let (name, inline) = match args[i].split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
            _ => (args[i].clone(), None),
        };
        if name == "--help" || name == "-h" {
            return Ok(None);
        }
        let value = match inline {
            Some(v) => v,
            None => {
                i += 1;
                args.get(i).cloned().ok_or_else(|| UsageError(format!("mint-token: {name} needs a value")))?
            }
        };
        match name.as_str() {
            "--secret" => secret = Some(value),
            "--sub" => claims.sub = value,
            "--name" => claims.name = Some(value),
            "--ttl" => {
                claims.ttl_secs =
                    value.parse().map_err(|_| UsageError(format!("mint-token: --ttl {value:?} is not seconds")))?
            }
            "--rooms" => claims.rooms = Some(value.split(',').map(|r| r.trim().to_string()).collect()),
            "--iss" => claims.iss = Some(value),
            "--aud" => claims.aud = Some(value),
            _ => return Err(UsageError(format!("mint-token: unknown argument {name:?}"))),
        }
        i += 1;
    }
    let secret = secret.ok_or_else(|| UsageError("mint-token: --secret (or TOKEN_SECRET) is required".into()))?;
    Ok(Some((secret, claims)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{decode, DecodingKey, Validation};

    #[test]
    fn minted_tokens_verify_with_the_secret() {
        let claims = Claims {
            sub: "cf-1".into(),
            ttl_secs: 30,
            rooms: Some(vec!["cf-*".into()]),
            aud: Some("chat".into()),
            ..Claims::default()
        };
        let token = mint(b"0123456789abcdef0123456789abcdef", &claims);
        let mut v = Validation::new(Algorithm::HS256);
        v.set_audience(&["chat"]);
        let data = decode::<Value>(&token, &DecodingKey::from_secret(b"0123456789abcdef0123456789abcdef"), &v).unwrap();
        assert_eq!(data.claims["sub"], "cf-1");
        assert_eq!(data.claims["rooms"][0], "cf-*");
        let exp = data.claims["exp"].as_u64().unwrap();
        let iat = data.claims["iat"].as_u64().unwrap();
        assert_eq!(exp - iat, 30);
        assert!(decode::<Value>(&token, &DecodingKey::from_secret(b"another-secret-another-secret-xx"), &v).is_err());
    }

    #[test]
    fn expiries_stay_clear_of_the_judgement() {
        assert_eq!(expiry(100, 60, 1000), 160);
        assert_eq!(expiry(900, 96, 1000), 996);
        assert_eq!(expiry(900, 97, 1000), 1002);
        assert_eq!(expiry(900, 101, 1000), 1002);
        assert_eq!(expiry(900, 102, 1000), 1002);
        assert_eq!(expiry(900, 103, 1000), 1003);
    }

    #[test]
    fn mint_arguments() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (s, c) = parse_mint(&args(&["--secret", "k", "--sub=u", "--ttl", "5", "--rooms", "a, b*"]), |_| None)
            .unwrap()
            .unwrap();
        assert_eq!((s.as_str(), c.sub.as_str(), c.ttl_secs), ("k", "u", 5));
        assert_eq!(c.rooms, Some(vec!["a".to_string(), "b*".to_string()]));
        assert!(parse_mint(&args(&[]), |_| None).is_err(), "a secret is required");
        assert_eq!(parse_mint(&args(&[]), |_| Some("env".into())).unwrap().unwrap().0, "env");
        assert!(parse_mint(&args(&["--ttl", "x", "--secret", "k"]), |_| None).is_err());
        assert!(parse_mint(&args(&["--help"]), |_| None).unwrap().is_none());
    }
}
