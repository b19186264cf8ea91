//! JWT verification with the `jsonwebtoken` crate (no hand-written
//! crypto): the key and the algorithm family come from the environment,
//! once, at start-up; each upgrade or `/history` request verifies its token
//! once, and nothing is verified per message.
//!
//! - `AUTH_JWT_SECRET`: HMAC (HS256, HS384, HS512), at least 32 bytes.
//! - `AUTH_JWT_PUBLIC_KEY_FILE`: a PEM public key; its type fixes the
//!   family — RSA (RS256/384/512, PS256/384/512), EC (ES256, ES384) or
//!   Ed25519 (EdDSA).
//!
//! Only the configured family is accepted: `alg: none` and an HMAC token
//! signed with the public key as its secret are refused before any
//! signature check (`bad_algorithm`). `exp` and `sub` are required, `nbf`
//! is checked when present, `iss`/`aud` are required and checked when
//! `AUTH_JWT_ISSUER`/`AUTH_JWT_AUDIENCE` are set (a token with an `aud`
//! is refused when none is configured, as RFC 7519 §4.1.3 asks). No leeway:
//! the connection is closed at `exp` exactly, so a token is either good
//! for both the check and the connection, or for neither.

use std::fmt;

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::rooms::Grant;
use super::{Denial, Refusal};
use crate::config::ConfigError;
use crate::http::query::{valid_name, MAX_NAME_CHARS};

/// Shortest HMAC secret accepted: 256 bits (RFC 7518 §3.2 asks for a key
/// at least as long as the hash output).
pub const MIN_SECRET_BYTES: usize = 32;
/// Longest `sub` accepted (it is the `userId` of every frame the user sends).
pub const MAX_USER_ID_CHARS: usize = 128;
/// Longest token looked at; the request head limit bounds it anyway.
const MAX_TOKEN_BYTES: usize = 8192;

/// Who a verified token says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim: the `userId` of the user's messages.
    pub user_id: String,
    /// The chat name: the `name` claim, else `sub` (its first 32 characters).
    pub name: String,
    /// `exp`, Unix seconds: the connection is closed then.
    pub expires: u64,
}

/// The claims read from a token (the standard ones are checked by the crate).
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
}

/// Verifies tokens with the configured key.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// Where the key came from, for the start-up line.
    source: &'static str,
}

impl fmt::Debug for Verifier {
    // Never the key: only what kind it is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({})", self.describe())
    }
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError { name, reason: reason.into() }
}

impl Verifier {
    /// The verifier the environment asks for, `None` when authentication is
    /// off. Reads the key file; every problem names its variable.
    pub fn from_env(get: &dyn Fn(&'static str) -> Option<String>) -> Result<Option<Verifier>, ConfigError> {
        let issuer = get("AUTH_JWT_ISSUER");
        let audience = get("AUTH_JWT_AUDIENCE");
        let (key, source) = match (get("AUTH_JWT_SECRET"), get("AUTH_JWT_PUBLIC_KEY_FILE")) {
            (Some(_), Some(_)) => {
                return Err(invalid("AUTH_JWT_SECRET", "set either it or AUTH_JWT_PUBLIC_KEY_FILE, not both"))
            }
            (Some(secret), None) => {
                if secret.len() < MIN_SECRET_BYTES {
                    return Err(invalid("AUTH_JWT_SECRET", format!("must be at least {MIN_SECRET_BYTES} bytes")));
                }
                (DecodingKey::from_secret(secret.as_bytes()), "AUTH_JWT_SECRET")
            }
            (None, Some(path)) => {
                let pem = std::fs::read(&path)
                    .map_err(|e| invalid("AUTH_JWT_PUBLIC_KEY_FILE", format!("cannot read {path}: {e}")))?;
                (public_key(&pem)?, "AUTH_JWT_PUBLIC_KEY_FILE")
            }
            (None, None) => {
                if issuer.is_some() || audience.is_some() {
                    return Err(invalid(
                        if issuer.is_some() { "AUTH_JWT_ISSUER" } else { "AUTH_JWT_AUDIENCE" },
                        "needs AUTH_JWT_SECRET or AUTH_JWT_PUBLIC_KEY_FILE",
                    ));
                }
                return Ok(None);
            }
        };
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = key.family().algorithms().to_vec();
        validation.leeway = 0;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = &audience {
            validation.set_audience(&[aud]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(Some(Verifier { key, validation, source }))
    }

    /// For the start-up line: the source and the accepted algorithms.
    pub fn describe(&self) -> String {
        let algs: Vec<String> = self.validation.algorithms.iter().map(|a| format!("{a:?}")).collect();
        format!("{} ({})", self.source, algs.join(","))
    }

    /// Verifies `token`: its identity and the rooms it grants, or why not.
    pub fn verify(&self, token: &str) -> Result<(Identity, Grant), Denial> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Denial::new(Refusal::Malformed, "the token is too long"));
        }
        // `none`, or an algorithm the crate does not know, fails to parse as
        // a header; tell it apart from a token that is not a JWT at all.
        if let Some(alg) = header_alg(token) {
            if !self.validation.algorithms.iter().any(|a| format!("{a:?}") == alg) {
                return Err(self.wrong_algorithm());
            }
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| self.refusal(e))?;
        let claims = data.claims;
        let expires = claims.exp.filter(|e| e.is_finite() && *e > 0.0).map(|e| e as u64);
        let (Some(expires), Some(sub)) = (expires, claims.sub) else {
            return Err(Denial::new(Refusal::MissingClaim, "the token needs exp and sub"));
        };
        let sub_chars = sub.chars().count();
        if sub_chars == 0 || sub_chars > MAX_USER_ID_CHARS || sub.chars().any(char::is_control) {
            return Err(Denial::new(
                Refusal::BadClaims,
                format!("sub must be 1 to {MAX_USER_ID_CHARS} printable characters"),
            ));
        }
        let name = match claims.name {
            Some(n) if valid_name(&n) => n,
            Some(_) => {
                return Err(Denial::new(
                    Refusal::BadClaims,
                    format!("name must be 1 to {MAX_NAME_CHARS} printable characters"),
                ))
            }
            None => {
                let n: String = sub.chars().take(MAX_NAME_CHARS).collect();
                if !valid_name(&n) {
                    return Err(Denial::new(Refusal::BadClaims, "sub is not usable as a name; add a name claim"));
                }
                n
            }
        };
        Ok((Identity { user_id: sub, name, expires }, Grant::from_claim(claims.rooms)))
    }

    fn wrong_algorithm(&self) -> Denial {
        let algs: Vec<String> = self.validation.algorithms.iter().map(|a| format!("{a:?}")).collect();
        Denial::new(
            Refusal::BadAlgorithm,
            format!("the token's algorithm is not accepted (allowed: {})", algs.join(", ")),
        )
    }

    fn refusal(&self, e: jsonwebtoken::errors::Error) -> Denial {
        let (reason, message) = match e.kind() {
            ErrorKind::InvalidSignature
            | ErrorKind::InvalidEcdsaKey
            | ErrorKind::InvalidEddsaKey
            | ErrorKind::InvalidRsaKey(_)
            | ErrorKind::InvalidKeyFormat => (Refusal::BadSignature, "the token's signature does not verify".into()),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
                return self.wrong_algorithm()
            }
            ErrorKind::ExpiredSignature => (Refusal::Expired, "the token has expired".into()),
            ErrorKind::ImmatureSignature => (Refusal::NotYetValid, "the token is not valid yet (nbf)".into()),
            ErrorKind::MissingRequiredClaim(c) => (Refusal::MissingClaim, format!("the token has no {c} claim")),
            ErrorKind::InvalidIssuer => (Refusal::BadIssuer, "the token is from another issuer".into()),
            ErrorKind::InvalidAudience => (Refusal::BadAudience, "the token is for another audience".into()),
            ErrorKind::InvalidClaimFormat(c) => (Refusal::Malformed, format!("the token's {c} claim is malformed")),
            ErrorKind::InvalidSubject => (Refusal::BadClaims, "the token's sub is not accepted".into()),
            _ => (Refusal::Malformed, "the token is not a well-formed JWT".into()),
        };
        Denial::new(reason, message)
    }
}

/// The public key of a PEM file: EC, Ed25519 or RSA, whichever it is.
fn public_key(pem: &[u8]) -> Result<DecodingKey, ConfigError> {
    DecodingKey::from_ec_pem(pem)
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .or_else(|_| DecodingKey::from_rsa_pem(pem))
        .map_err(|_| invalid("AUTH_JWT_PUBLIC_KEY_FILE", "not a PEM RSA, EC (P-256/P-384) or Ed25519 public key"))
}

/// The `alg` of a token's header, if the header is base64url JSON with one.
fn header_alg(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.trim_end_matches('=')).ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("alg")?.as_str().map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "unit-test-secret-of-at-least-32-bytes";

    fn verifier(vars: &[(&'static str, &str)]) -> Verifier {
        let get = |name: &'static str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string());
        Verifier::from_env(&get).unwrap().unwrap()
    }

    fn token(claims: serde_json::Value) -> String {
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
    }

    fn exp() -> u64 {
        jsonwebtoken::get_current_timestamp() + 600
    }

    #[test]
    fn identity_name_defaults_to_the_first_32_characters_of_sub() {
        let v = verifier(&[("AUTH_JWT_SECRET", SECRET)]);
        let sub = "x".repeat(40);
        let (id, grant) = v.verify(&token(json!({"sub": sub, "exp": exp()}))).unwrap();
        assert_eq!((id.user_id.len(), id.name.len()), (40, 32));
        assert!(grant.allows("any"));
        let (id, _) = v.verify(&token(json!({"sub": "u", "name": "Ana", "exp": exp()}))).unwrap();
        assert_eq!((id.user_id.as_str(), id.name.as_str()), ("u", "Ana"));
    }

    #[test]
    fn refusal_reasons() {
        let v = verifier(&[("AUTH_JWT_SECRET", SECRET)]);
        let reason = |t: &str| v.verify(t).unwrap_err().reason;
        assert_eq!(reason(&token(json!({"sub": "u", "exp": 1}))), Refusal::Expired);
        assert_eq!(reason(&token(json!({"sub": "u"}))), Refusal::MissingClaim);
        assert_eq!(reason(&token(json!({"sub": "u", "exp": "soon"}))), Refusal::Malformed);
        assert_eq!(reason(&token(json!({"sub": "u\u{1}", "exp": exp()}))), Refusal::BadClaims);
        assert_eq!(reason("a.b"), Refusal::Malformed);
        assert_eq!(reason(&"x".repeat(MAX_TOKEN_BYTES + 1)), Refusal::Malformed);
        let hs512 = encode(
            &Header::new(Algorithm::HS512),
            &json!({"sub": "u", "exp": exp()}),
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(v.verify(&hs512).is_ok(), "the whole HMAC family");
    }

    #[test]
    fn the_header_algorithm_is_read_without_trusting_it() {
        assert_eq!(header_alg("eyJhbGciOiJub25lIn0.e30.").as_deref(), Some("none"));
        assert_eq!(header_alg("!!!.e30."), None);
        assert_eq!(header_alg(""), None);
    }
}
